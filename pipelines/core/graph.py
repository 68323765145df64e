"""The stage graph, in order: ingest -> heuristic filter -> dedup -> quality filter -> tokenize -> shards."""

from __future__ import annotations

import time

from dedup.stage import DedupStage
from filters.stage import HeuristicFilterStage, QualityFilterStage
from pipelines.core.outputs import remove_stale_temp
from pipelines.core.progress import format_seconds, say
from pipelines.tokens.shards import ShardsStage, TokenizeStage
from pipelines.core.stages import IngestStage, Stage, StageContext

STAGES: list[Stage] = [
    IngestStage(),
    HeuristicFilterStage(),
    DedupStage(),
    QualityFilterStage(),
    TokenizeStage(),
    ShardsStage(),
]


def planned_stages(cfg, only: list[str] | None = None) -> list[Stage]:
    """The stages a run of `cfg` goes through, in order."""
    return [s for s in STAGES if s.enabled(cfg) and (only is None or s.name in only)]


def stage_line(counts: dict[str, dict]) -> str:
    """A finished stage's totals, from the same figures report.json gets."""
    total = {k: sum(c[k] for c in counts.values()) for k in ("in", "out", "quarantined")}
    removed = sum(sum(c["removed"].values()) for c in counts.values())
    return (f"{total['in']:,} docs in, {total['out']:,} out, {removed:,} removed, "
            f"{total['quarantined']:,} quarantined")


def run_stages(ctx: StageContext, only: list[str] | None = None,
               on_stage=None) -> dict[str, dict[str, dict]]:
    """Run every enabled stage in order (or just `only`); returns {stage: {source: counts}}.
    `on_stage(name, status)` is called as each stage starts ("running") and ends ("done")."""
    results: dict[str, dict[str, dict]] = {}
    upstream: dict[str, dict] = {}
    stages = planned_stages(ctx.cfg, only)
    for k, stage in enumerate(stages, 1):
        ctx.label = f"{k}/{len(stages)} {stage.name}"
        if on_stage:
            on_stage(stage.name, "running")
        t0 = time.monotonic()
        upstream = stage.run(ctx, upstream)
        remove_stale_temp(ctx.out)  # a worker killed mid-write left its temp file; its retry wrote the real one
        ctx.timings[stage.name] = round(time.monotonic() - t0, 3)
        results[stage.name] = upstream
        if not all(c.get("untouched") for c in upstream.values()):  # else it said "nothing to do"
            say(ctx.quiet, ctx.label, f"done in {format_seconds(ctx.timings[stage.name])}: {stage_line(upstream)}")
        if on_stage:
            on_stage(stage.name, "done")
    return results
