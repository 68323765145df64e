"""The two filtering stages and the per-source policy that decides what each source goes through.

heuristic_filter  Zyda-1's heuristics on the sources in `heuristic_filter.apply_to` (Ray tasks).
quality_filter    the quality classifier on `quality_filter.apply_to` (Zyda-1 and Dolma-CC in the
                  recipe), run by Ray actors that load the model once; FineWeb-Edu cut to
                  `int_score >= fwe_min_int_score`; every other source untouched.

A source a stage does not touch is not copied: the next stage reads it where it already is
(`StageContext.docs_dirs`). Every removal carries a reason; `report.json` gets, per source and
reason, documents and characters removed and the first few removed documents as examples.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from filters.heuristics import HeuristicFilters
from pipelines.core.outputs import write_table
from pipelines.core.progress import ProgressDisplay
from pipelines.core.schema import with_quality_columns
from pipelines.core.sources import SourceFile
from pipelines.core.stages import (Stage, StageContext, docs_in, done_stats, input_bytes, run_partitions, sum_by_source,
                              task_log, write_marker)

EXCERPT_CHARS = 300


def write_filtered(ctx: StageContext, stage: str, sf: SourceFile, table: pa.Table, reasons: list[str | None],
                   examples: int) -> dict:
    """Write the kept rows of `table` as this stage's partition; return counts, chars and examples."""
    keep = np.array([r is None for r in reasons], bool)
    write_table(ctx.out / stage / sf.source / f"{sf.part_name}.parquet", table.filter(pa.array(keep)))
    lengths = pc.utf8_length(table.column("text")).to_numpy(zero_copy_only=False)
    removed: dict[str, int] = {}
    removed_chars: dict[str, int] = {}
    shown: dict[str, list] = {}
    ids = table.column("nemo_id")
    texts = table.column("text")
    for i in np.flatnonzero(~keep):
        reason = reasons[i]
        removed[reason] = removed.get(reason, 0) + 1
        removed_chars[reason] = removed_chars.get(reason, 0) + int(lengths[i])
        if len(shown.setdefault(reason, [])) < examples:
            shown[reason].append({"nemo_id": ids[i].as_py(), "excerpt": texts[i].as_py()[:EXCERPT_CHARS]})
    return {"source": sf.source, "src_file": sf.rel, "read": table.num_rows, "out": int(keep.sum()),
            "removed": dict(sorted(removed.items())), "removed_chars": dict(sorted(removed_chars.items())),
            "examples": shown, "quarantined": 0,
            "chars_out": int(lengths[keep].sum())}


def merge(ctx: StageContext, stage: str, stats: list[dict], upstream: dict[str, dict], examples: int) -> dict:
    """Per-source counts of a filtering stage: partitions it ran on plus sources it passed through."""
    touched = {s["source"] for s in stats}
    by_source = sum_by_source(stats, [s for s in upstream if s in touched])
    shown: dict[str, dict[str, list]] = {}
    for s in stats:
        for reason, docs in s.get("examples", {}).items():
            bucket = shown.setdefault(s["source"], {}).setdefault(reason, [])
            bucket.extend(docs[: examples - len(bucket)])
    for src, u in upstream.items():
        if src not in touched:
            by_source[src] = {"in": u["out"], "out": u["out"], "removed": {}, "quarantined": 0,
                              "chars_out": u["chars_out"], "untouched": True}
    ctx.details[stage] = {"examples": {s: dict(sorted(r.items())) for s, r in sorted(shown.items())}}
    return dict(sorted(by_source.items()))


class HeuristicFilterStage(Stage):
    name = "heuristic_filter"

    def run(self, ctx: StageContext, upstream):
        cfg = ctx.cfg.heuristic_filter
        files = [sf for sf in ctx.files if sf.source in cfg.apply_to]
        docs_dirs = dict(ctx.docs_dirs)

        def task(sf: SourceFile) -> dict:
            path = ctx.docs_path(sf, docs_dirs)
            table = pq.read_table(path)
            filters = HeuristicFilters(cfg)
            reasons = [filters.check(t) for t in table.column("text").to_pylist()]
            ctx.progress.add.remote(self.name, table.num_rows, path.stat().st_size)
            return write_filtered(ctx, self.name, sf, table, reasons, cfg.examples_per_filter)

        stats = run_partitions(ctx, self.name, ctx.cfg.section_hash("ingest", "heuristic_filter"), task, files)
        for source in cfg.apply_to:
            ctx.docs_dirs[source] = self.name
        return merge(ctx, self.name, stats, upstream, cfg.examples_per_filter)


@ray.remote
class QualityScorer:
    """One classifier instance; `score` filters one partition with it."""

    def __init__(self, qcfg):
        from filters.quality import load_classifier
        self.cfg = qcfg
        self.model = load_classifier(qcfg)

    def score(self, ctx: StageContext, docs_dirs: dict, sf: SourceFile, config_hash: str) -> dict:
        t0 = time.monotonic()
        task_log(ctx.out, "quality_filter", sf, f"start {sf.url}")
        path = ctx.docs_path(sf, docs_dirs)
        table = pq.read_table(path)
        preds, probs = self.model.predict(table.column("text").to_pylist())
        table = with_quality_columns(table, preds, probs)
        keep = set(self.cfg.keep_labels)
        reasons = [None if p in keep else f"quality:{p}" for p in preds]
        stats = write_filtered(ctx, "quality_filter", sf, table, reasons, examples=5)
        write_marker(ctx.out, "quality_filter", config_hash, sf, stats, time.monotonic() - t0)
        ctx.progress.add.remote("quality_filter", table.num_rows, path.stat().st_size)
        return stats


def actor_plan(cpus: float, wanted: int, gpus: float, partitions: int,
               custom: dict[str, float] | None = None) -> tuple[float, int]:
    """(CPUs per actor, number of actors) that the cluster can actually start: an actor pool
    waits forever on an actor that asks for more than the cluster has."""
    resources = ray.cluster_resources()
    total_cpus = resources.get("CPU", 1.0)
    cpus = min(cpus, total_cpus)
    n = max(1, min(wanted, partitions, int(total_cpus // cpus) if cpus else wanted))
    if gpus:
        total_gpus = resources.get("GPU", 0.0)
        if total_gpus < gpus:
            raise RuntimeError(f"quality_filter.actor_gpus={gpus} but the Ray cluster has {total_gpus:g} GPUs; "
                               "set quality_filter.actor_gpus=0 to score on CPU")
        n = max(1, min(n, int(total_gpus // gpus)))
    for name, amount in (custom or {}).items():
        if amount and resources.get(name, 0.0) < amount:
            raise RuntimeError(f"ray.stage_resources.quality_filter asks for {amount:g} {name!r} per actor but the "
                               f"Ray cluster has {resources.get(name, 0.0):g}")
        if amount:
            n = max(1, min(n, int(resources[name] // amount)))
    return cpus, n


class QualityFilterStage(Stage):
    name = "quality_filter"

    def run(self, ctx: StageContext, upstream):
        cfg = ctx.cfg.quality_filter
        config_hash = ctx.cfg.section_hash("ingest", "heuristic_filter", "dedup", "quality_filter")
        docs_dirs = dict(ctx.docs_dirs)
        stats: list[dict] = []

        # the int_score cut, unless the classifier is asked to judge FineWeb-Edu itself
        fwe = [sf for sf in ctx.files if sf.source == "fwe" and "fwe" not in cfg.apply_to
               and cfg.fwe_min_int_score is not None]

        def fwe_task(sf: SourceFile) -> dict:
            path = ctx.docs_path(sf, docs_dirs)
            table = pq.read_table(path)
            ctx.progress.add.remote(self.name, table.num_rows, path.stat().st_size)
            scores = table.column("int_score").to_pylist()
            reasons = [None if s is not None and s >= cfg.fwe_min_int_score else
                       ("int_score_missing" if s is None else f"int_score_below_{cfg.fwe_min_int_score}")
                       for s in scores]
            return write_filtered(ctx, self.name, sf, with_quality_columns(table), reasons, examples=5)

        scored = [sf for sf in ctx.files if sf.source in cfg.apply_to]
        if not fwe and not scored:
            run_partitions(ctx, self.name, config_hash, fwe_task, [])  # says there is nothing to do
            return merge(ctx, self.name, [], upstream, 5)
        # one progress line for both kinds of partition (the int_score cut and the classifier)
        display = ProgressDisplay(self.name, len(fwe) + len(scored), ctx.progress, ctx.quiet,
                                  label=ctx.label or self.name, weights=[input_bytes(sf) for sf in fwe + scored])
        stats += run_partitions(ctx, self.name, config_hash, fwe_task, fwe, display=display)
        todo = []
        for sf in scored:
            done = done_stats(ctx, self.name, config_hash, sf)
            if done is None:
                todo.append(sf)
            else:
                stats.append(done)
                display.skip(docs_in(done), input_bytes(sf))
        display.update()
        if todo:
            if cfg.backend == "deberta":
                from filters.quality import resolve_model_dir
                resolve_model_dir(cfg.model)  # fail here, in one line, not inside every actor
            options = ctx.cfg.ray.task_options(self.name)
            options["num_cpus"], n_actors = actor_plan(options["num_cpus"], cfg.actors, cfg.actor_gpus, len(todo),
                                                       options.get("resources"))
            actor_cls = QualityScorer.options(**options, num_gpus=cfg.actor_gpus,
                                              max_restarts=ctx.cfg.ray.max_retries,
                                              max_task_retries=ctx.cfg.ray.max_retries)
            actors = [actor_cls.remote(cfg) for _ in range(n_actors)]
            pool = ray.util.ActorPool(actors)
            for sf in todo:
                pool.submit(lambda a, sf: a.score.remote(ctx, docs_dirs, sf, config_hash), sf)
            weight = {(sf.source, sf.rel): input_bytes(sf) for sf in todo}
            while pool.has_next():
                try:
                    done = pool.get_next_unordered(timeout=0.5)
                except TimeoutError:
                    display.update()
                    continue
                stats.append(done)
                display.update(1, weight[(done["source"], done["src_file"])])
            for a in actors:
                ray.kill(a)
        display.close(sum(docs_in(s) for s in stats))
        order = {(sf.source, sf.rel): i for i, sf in enumerate(ctx.files)}
        stats.sort(key=lambda s: order[(s["source"], s["src_file"])])
        for source in set(cfg.apply_to) | ({"fwe"} if fwe else set()):
            ctx.docs_dirs[source] = self.name
        return merge(ctx, self.name, stats, upstream, 5)
