"""The Zyda-2 pipeline: its stages, in order. Every other list of stages derives from this one.

  ingest -> heuristic_filter -> dedup -> quality_filter -> tokenize -> shards

Run it with `pipelines.core.run.run_pipeline(PIPELINE, cfg)` (what `zyda2.py run` does). Adding a
stage is one class (pipelines/core/stage.py) and one line here, or, without editing this file,
`run_pipeline(PIPELINE.with_stage(MyStage(), after="dedup"), cfg)`.
"""

from dedup.stage import DedupStage
from filters.stage import HeuristicFilterStage, QualityFilterStage
from pipelines.core.stage import Pipeline
from pipelines.ingest.stage import IngestStage
from pipelines.tokens.shards import ShardsStage
from pipelines.tokens.tokenize import TokenizeStage

PIPELINE = Pipeline([
    IngestStage(),
    HeuristicFilterStage(),
    DedupStage(),
    QualityFilterStage(),
    TokenizeStage(),
    ShardsStage(),
])
