"""zyda2 pipeline: the stages that rebuild Zyda-2, and everything that uses their products.

Data flows one way:

  sources (native files) --ingest--> ingest/ (DOC_SCHEMA parquet, one per input file)
      --> heuristic_filter --> dedup --> quality_filter --> tokenize --> shards
  quarantine/ collects what could not be read; report.json accounts for every document.

Sub-packages (tests/ mirrors them):
  core/        the stage contract (stage), the executor, the run (manifest, resume, report), config,
               the source registry, counts, schemas, atomic outputs, progress
  ingest/      discovery, native readers, remote reads with retries, normalisation, the ingest stage
  tokens/      the Mistral tokenizer and its fast exact encoder, the tokenize and shards stages,
               Megatron indexed files
  training/    Zamba2 model presets, packed token streams, the trainer
  evaluation/  the eval harness, lm-eval adapter, annealing ablations
  release/     Hub publishing, the run report
  pipeline.py  the Zyda-2 pipeline: the one list of stages (run it with core.run.run_pipeline)
dedup/ and filters/ (beside pipelines/) hold the dedup stage and the filter stages with their kernels.
"""
