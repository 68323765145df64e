"""The stage graph, in order: ingest -> heuristic filter -> dedup -> quality filter -> tokenize -> shards."""

from __future__ import annotations

import time

from dedup.stage import DedupStage
from filters.stage import HeuristicFilterStage, QualityFilterStage
from pipelines.outputs import remove_stale_temp
from pipelines.shards import ShardsStage, TokenizeStage
from pipelines.stages import IngestStage, Stage, StageContext

STAGES: list[Stage] = [
    IngestStage(),
    HeuristicFilterStage(),
    DedupStage(),
    QualityFilterStage(),
    TokenizeStage(),
    ShardsStage(),
]


def run_stages(ctx: StageContext, only: list[str] | None = None) -> dict[str, dict[str, dict]]:
    """Run every enabled stage in order (or just `only`); returns {stage: {source: counts}}."""
    results: dict[str, dict[str, dict]] = {}
    upstream: dict[str, dict] = {}
    for stage in STAGES:
        if not stage.enabled(ctx.cfg) or (only is not None and stage.name not in only):
            continue
        t0 = time.monotonic()
        upstream = stage.run(ctx, upstream)
        remove_stale_temp(ctx.out)  # a worker killed mid-write left its temp file; its retry wrote the real one
        ctx.timings[stage.name] = round(time.monotonic() - t0, 3)
        results[stage.name] = upstream
    return results
