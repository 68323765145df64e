"""zyda2 pipeline: the stage graph and everything that moves documents between stages.

Data flows one way:

  sources (native files) --readers--> ingest/ (DOC_SCHEMA parquet, one per input file)
      --> heuristic_filter --> dedup --> quality_filter --> tokenize --> shards
  quarantine/ collects what could not be read; report.json accounts for every document.

Modules: config (YAML -> dataclasses), sources (file discovery, ids), readers (native formats),
schema (Arrow schemas), ingest (normalise one file), outputs (atomic files), stages (the graph),
runner (Ray session, manifest, resume), report (accounting), progress (live display).
"""
