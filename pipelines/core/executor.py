"""The one executor: runs a `Pipeline`'s stages on Ray for one run folder.

It owns everything a stage does not declare (see stage.py): Ray tasks or actors and their
resources and retries, completion markers, per-task logs, progress lines, config-hash chaining,
where each source's current documents are (derived from the pipeline: `Pipeline.docs_folder`),
stale-temp cleanup and the per-source counts each stage hands to the next.

Work unit: one partition (one input file). Its outputs are written atomically, then its marker
`<run>/<step>/_done/<source>__<part>.json` records the config hash, the input and the counts; a
resumed run skips partitions whose marker matches, whatever the number of workers it now has.
Scheduling unit: a task group (grouping.py), partitions packed in file order up to
`ray.task_group_mb` of input and `ray.task_group_files` files; its task runs them one after the
other, so many small files cost few tasks and the outputs are the same whatever the grouping.

Why Ray tasks (one per group of partitions) rather than Ray Data: every partition's outputs must keep a
deterministic name and content and its completion must be recorded for `--resume`; with tasks both
are direct, and Ray still schedules, retries after worker loss and spreads over a cluster
(`benchmarks/ingest.py` measures both on the fixtures: 2.05 s vs 5.41 s).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import ray

from pipelines.core.counts import Counts, by_source, docs_in, stage_line
from pipelines.core.grouping import group_target, task_groups
from pipelines.core.outputs import remove_stale_temp
from pipelines.core.progress import ProgressDisplay, format_seconds, say
from pipelines.core.sources import SourceFile
from pipelines.core.stage import (
    GlobalStage,
    Partition,
    PartitionStage,
    Pipeline,
    RunError,
    Stage,
    StageWorker,
    committed,
    done_stats,
    grouped,
    input_bytes,
    logged,
    process_partition,
    source_bytes,
)

# -- the driver side

class Executor:
    """Runs `pipeline` for one run folder `out` over `files`; `progress` is a ProgressCounter handle."""

    def __init__(self, pipeline: Pipeline, cfg, out: Path, files: list[SourceFile], progress,
                 quiet: bool = False, allow_empty: bool = False):
        self.pipeline, self.cfg, self.out, self.files = pipeline, cfg, out, files
        self.progress, self.quiet, self.allow_empty = progress, quiet, allow_empty
        self.timings: dict[str, float] = {}
        self.details: dict[str, dict] = {}       # stage-level figures for report.json
        self.partition_counts: dict[str, list[Counts]] = {}  # per stage, in file order
        self.tasks: dict[str, int] = {}          # Ray tasks (or actor calls) started per step, for manifest.json
        self.objects: dict[str, int] = {}        # Ray objects made per step, by steps that count them (dedup)
        self.label = ""                          # of the running stage in progress lines: `3/6 dedup`
        self._hashes: dict[str, str] = {}        # config_hash per stage (the config does not change in a run)

    # -- services for stages
    def config_hash(self, stage: str) -> str:
        # ~1 ms each (hashing the config sections), asked per partition by planning steps: once per stage
        if stage not in self._hashes:
            self._hashes[stage] = self.pipeline.config_hash(self.cfg, stage)
        return self._hashes[stage]

    def docs_folder(self, stage: str, source: str) -> str | None:
        """Where `source`'s documents are when `stage` starts (None for the first stage: the inputs)."""
        return None if stage == self.pipeline.names[0] else self.pipeline.docs_folder(self.cfg, stage, source)

    def partition(self, stage: str, sf: SourceFile) -> Partition:
        """`sf` as stage `stage` sees it: its current documents are where the pipeline put them."""
        return Partition.at(sf, self.out, self.docs_folder(stage, sf.source), stage, self.progress)

    def docs_chars(self, stage: str, sf: SourceFile) -> int:
        """Characters of `sf`'s documents when `stage` starts, before reading them: `chars_out` in the
        marker of the stage that wrote them (what plans shards and Hub files). RunError if unmarked."""
        folder = self.docs_folder(stage, sf.source)
        stats = self.done(folder, self.config_hash(folder), sf)
        if stats is None:
            raise RunError(f"{stage}: {sf.source} {sf.rel} has no completion marker in {folder}/, so it cannot "
                           "be planned; finish the run with --resume")
        return stats["chars_out"]

    def options(self, step: str) -> dict:
        return self.cfg.ray.task_options(step)

    def remote(self, fn: Callable, step: str, **options):
        """`fn` as a Ray remote function with the step's resources and the run's retries."""
        return ray.remote(fn).options(**{**self.options(step), "max_retries": self.cfg.ray.max_retries, **options})

    def done(self, step: str, config_hash: str, sf: SourceFile) -> dict | None:
        """The stats of a partition already finished with this config, or None."""
        return done_stats(self.out, step, config_hash, sf)

    def display(self, step: str, files: list[SourceFile], label: str | None = None,
                weights: list[float] | None = None) -> ProgressDisplay:
        return ProgressDisplay(step, len(files), self.progress, self.quiet, label=label or self.label or step,
                               weights=weights or [source_bytes(sf) for sf in files])

    def input_sizes(self, stage: str, files: list[SourceFile]) -> list[float]:
        """Bytes each partition reads in `stage`: the input file for the first stage, else its documents
        (the file holding their text, which a selection only points into)."""
        if stage == self.pipeline.names[0]:
            return [source_bytes(sf) for sf in files]
        return [input_bytes(Partition.at(sf, self.out, self.pipeline.documents_folder(self.cfg, stage, sf.source),
                                         stage).docs) for sf in files]

    def task_groups(self, step: str, sizes: list[float], keys: list | None = None,
                    slots: int | None = None) -> list[list[int]]:
        """Partitions (by their input `sizes`, in order) grouped into tasks (grouping.py); `slots`: tasks
        that run at once (default: the cluster's CPUs over the step's `num_cpus`)."""
        ray_cfg = self.cfg.ray
        if slots is None:
            cpus = self.options(step)["num_cpus"]
            slots = int(ray.cluster_resources().get("CPU", 1.0) // cpus) if cpus else len(sizes)
        target = group_target(sizes, ray_cfg.task_group_mb, ray_cfg.task_group_waves, max(slots, 1))
        return task_groups(sizes, target, ray_cfg.task_group_files, keys)

    def map_partitions(self, step: str, config_hash: str, fn: Callable[[SourceFile], dict],
                       files: list[SourceFile] | None = None, label: str | None = None,
                       display: ProgressDisplay | None = None, group_of: Callable[[SourceFile], str | None] | None
                       = None, group_limit: int = 0, actors: list | None = None,
                       sizes: list[float] | None = None, commits: list[list[int]] | None = None) -> list[dict]:
        """Run `fn` on every partition (or on `files`) in Ray tasks of grouped partitions (task_groups;
        `sizes`: input bytes of each file, default the file's), or on `actors` (then `fn(actor, files)`
        returns an object ref of their stats); reuse the stats of partitions already done. Results
        come in the order of the files. A `display` given is updated, not closed (the caller has more
        work in the step). With `group_of`, a task's files share their group and at most `group_limit`
        tasks of one group (e.g. the host a remote file is read from) run at once.

        `commits`: fixed groups (indices into the files, e.g. the files of one planned shard) whose
        outputs are one commit instead: `fn(files) -> [(stats, seconds)]` runs on a whole group
        (stage.committed writes the markers after it), and a group is redone whole unless every one
        of its files is done."""
        files = self.files if files is None else files
        sizes = [source_bytes(sf) for sf in files] if sizes is None else sizes
        results: dict[int, dict] = {}
        todo = []
        for i, sf in enumerate(files):
            stats = self.done(step, config_hash, sf)
            if stats is None:
                todo.append(i)
            else:
                results[i] = stats
        if not files:
            if display is None:
                say(self.quiet, label or self.label or step, "nothing to do: no partition goes through this stage")
            return []
        if commits is not None:
            waiting = [g for g in commits if any(i not in results for i in g)]
            for i in (i for g in waiting for i in g):
                results.pop(i, None)
            start = self.remote(committed(self.out, step, config_hash, fn), step).remote
        else:
            keys = [group_of(files[i]) for i in todo] if group_of else None
            waiting = [[todo[j] for j in g] for g in self.task_groups(
                step, [sizes[i] for i in todo], keys, None if actors is None else len(actors))]
            if actors is None:
                start = self.remote(grouped(self.out, step, config_hash, fn), step).remote
        self.tasks[step] = self.tasks.get(step, 0) + len(waiting)
        idle = list(actors or ())
        running: dict[str | None, int] = {}
        pending: dict = {}
        busy: dict = {}

        def submit():
            for g in list(waiting):
                group = group_of(files[g[0]]) if group_of else None
                if group is not None and running.get(group, 0) >= group_limit:
                    continue
                if actors is not None:
                    if not idle:
                        return
                    actor = idle.pop()
                    ref = fn(actor, [files[i] for i in g])
                    busy[ref] = actor
                else:
                    ref = start([files[i] for i in g])
                waiting.remove(g)
                running[group] = running.get(group, 0) + 1
                pending[ref] = g

        submit()
        own = display is None
        if own:
            display = self.display(step, files, label, weights=sizes)
        for i, stats in results.items():
            display.skip(docs_in(stats), sizes[i])
        display.update()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
            for ref in ready:
                g = pending.pop(ref)
                running[group_of(files[g[0]]) if group_of else None] -= 1
                if ref in busy:
                    idle.append(busy.pop(ref))
                results.update(zip(g, ray.get(ref)))
                display.update(len(g), sum(sizes[i] for i in g))
            if not ready:
                display.update()
            submit()
        if own:
            display.close(sum(docs_in(r) for r in results.values()))
        return [results[i] for i in range(len(files))]

    def wait(self, refs: list, step: str, docs: int | None = None, label: str | None = None) -> list:
        """`ray.get(refs)` with a progress line (tasks done, elapsed, ETA); `docs` is the step's
        document count for its closing line (None: a step that counts no documents)."""
        display = ProgressDisplay(step, len(refs), None, self.quiet, label=label or self.label or step)
        index = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            for ref in ready:
                results[index[ref]] = ray.get(ref)
            display.update(len(ready))
        display.close(docs)
        return results

    # -- running stages
    def run_partition_stage(self, stage: PartitionStage, upstream: dict[str, Counts]) -> dict[str, Counts]:
        cfg, name = self.cfg, stage.name
        config_hash = self.config_hash(name)
        files = [sf for sf in self.files if stage.applies_to(cfg, sf.source)]
        stage.check(cfg)
        plain = [sf for sf in files if not stage.uses_setup(cfg, sf.source)]
        modelled = [sf for sf in files if stage.uses_setup(cfg, sf.source)]

        out, progress = self.out, self.progress
        folders = {s: self.docs_folder(name, s) for s in {sf.source for sf in files}}

        def task(sf: SourceFile) -> dict:  # ships the stage and config only, not the executor
            return process_partition(stage, cfg, Partition.at(sf, out, folders[sf.source], name, progress))

        sizes = self.input_sizes(name, plain + modelled)
        display = self.display(name, plain + modelled, weights=sizes) if files else None
        stats = self.map_partitions(name, config_hash, task, plain, display=display,
                                    group_of=lambda sf: stage.task_group(cfg, sf),
                                    group_limit=stage.max_per_group(cfg), sizes=sizes[: len(plain)])
        if modelled:
            todo = [sf for sf in modelled if self.done(name, config_hash, sf) is None]
            actors = self.start_actors(stage, len(todo)) if todo else []
            stats += self.map_partitions(name, config_hash, lambda actor, sfs: actor.run.remote(
                [self.partition(name, sf) for sf in sfs], config_hash), modelled, display=display, actors=actors,
                sizes=sizes[len(plain):])
            for actor in actors:
                ray.kill(actor)
        if display is not None:  # else map_partitions said there is nothing to do
            display.close(sum(docs_in(s) for s in stats))
        return self.totals(stage, stats, upstream)

    def totals(self, stage: PartitionStage, stats: list[dict], upstream: dict[str, Counts]) -> dict[str, Counts]:
        """Per-source counts of a partition stage from its partitions' stats, sources it does not
        touch passed through; then the stage's own `summarize` (checks, report details)."""
        order = {(sf.source, sf.rel): i for i, sf in enumerate(self.files)}
        stats = sorted(stats, key=lambda s: order[(s["source"], s["src_file"])])
        counts = [Counts.from_partition_dict(s) for s in stats]
        self.partition_counts[stage.name] = counts
        # the first stage accounts for every enabled source, even one without a file (--allow-empty)
        sources = [n for n, s in self.cfg.sources.items() if s.enabled] if stage.name == self.pipeline.names[0] \
            else [s for s in upstream if any(sf.source == s and stage.applies_to(self.cfg, s) for sf in self.files)]
        totals = by_source(counts, sources)
        for source, c in upstream.items():
            if source not in totals:
                totals[source] = Counts.passthrough(source, c)
        totals = dict(sorted(totals.items()))
        details = stage.summarize(self, counts, totals, upstream)
        if details is not None:
            self.details[stage.name] = details
        return totals

    def run_fused(self, stages: list[PartitionStage], upstream: dict[str, Counts],
                  label: str) -> dict[str, dict[str, Counts]]:
        """Consecutive partition stages in one Ray task per group of partitions: each stage still writes
        its outputs and marker and keeps its own counts (so resume and the report are as unfused); a
        partition is scheduled once and read while the file system still caches it. Returns
        {stage: per-source counts}."""
        cfg, out, progress = self.cfg, self.out, self.progress
        names = [s.name for s in stages]
        hashes = {s.name: self.config_hash(s.name) for s in stages}
        files = [sf for sf in self.files if any(s.applies_to(cfg, sf.source) for s in stages)]
        folders = {(s.name, sf.source): self.docs_folder(s.name, sf.source) for s in stages for sf in files}
        for s in stages:
            s.check(cfg)

        def task(sfs: list[SourceFile]) -> list[dict[str, dict]]:
            results = [{} for _ in sfs]
            for sf, result in zip(sfs, results):
                for s in stages:
                    if not s.applies_to(cfg, sf.source):
                        continue
                    result[s.name] = done_stats(out, s.name, hashes[s.name], sf)
                    if result[s.name] is None:
                        part = Partition.at(sf, out, folders[(s.name, sf.source)], s.name, progress)
                        result[s.name] = logged(out, s.name, hashes[s.name],
                                                lambda _sf: process_partition(s, cfg, part))(sf)
            return results

        remote = self.remote(task, names[0])
        sizes = self.input_sizes(names[0], files)
        display = self.display(names[0], files, label, weights=sizes)
        pending = {remote.remote([files[i] for i in g]): g for g in self.task_groups(names[0], sizes)}
        self.tasks[names[0]] = len(pending)
        done: list[dict] = [{} for _ in files]
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
            for ref in ready:
                g = pending.pop(ref)
                for i, d in zip(g, ray.get(ref)):
                    done[i] = d
                display.update(len(g), sum(sizes[i] for i in g))
            if not ready:
                display.update()
        display.close(sum(docs_in(d[names[0]]) for d in done if names[0] in d))
        results = {}
        for s in stages:
            upstream = results[s.name] = self.totals(s, [d[s.name] for d in done if s.name in d], upstream)
        return results

    def start_actors(self, stage: PartitionStage, partitions: int) -> list:
        """As many actors as wanted and the cluster can actually start: a pool waits forever on an
        actor that asks for more than the cluster has."""
        options = self.options(stage.name)
        wanted, gpus = stage.actor_pool(self.cfg)
        resources = ray.cluster_resources()
        total_cpus = resources.get("CPU", 1.0)
        cpus = min(options["num_cpus"], total_cpus)
        n = max(1, min(wanted, partitions, int(total_cpus // cpus) if cpus else wanted))
        if gpus:
            total_gpus = resources.get("GPU", 0.0)
            if total_gpus < gpus:
                raise RuntimeError(f"{stage.name}: {gpus} GPUs per actor but the Ray cluster has {total_gpus:g} "
                                   f"GPUs; set {stage.name}.actor_gpus=0 to run on CPU")
            n = max(1, min(n, int(total_gpus // gpus)))
        for res, amount in (options.get("resources") or {}).items():
            if amount and resources.get(res, 0.0) < amount:
                raise RuntimeError(f"ray.stage_resources.{stage.name} asks for {amount:g} {res!r} per actor but "
                                   f"the Ray cluster has {resources.get(res, 0.0):g}")
            if amount:
                n = max(1, min(n, int(resources[res] // amount)))
        worker = StageWorker.options(**{**options, "num_cpus": cpus}, num_gpus=gpus,
                                     max_restarts=self.cfg.ray.max_retries,
                                     max_task_retries=self.cfg.ray.max_retries)
        return [worker.remote(stage, self.cfg) for _ in range(n)]

    def run(self, only: list[str] | None = None, on_stage=None) -> dict[str, dict[str, dict]]:
        """Run every enabled stage in order (or just `only`); returns {stage: {source: counts}} in
        report.json's shape. `on_stage(name, status)` is called as each stage starts ("running") and
        ends ("done")."""
        results: dict[str, dict[str, dict]] = {}
        upstream: dict[str, Counts] = {}
        stages = self.pipeline.planned(self.cfg, only)
        k = 0
        for group in self.fused_groups(stages):
            first, last = k + 1, k + len(group)
            k = last
            names = [s.name for s in group]
            self.label = f"{first}/{len(stages)} {names[0]}" if len(group) == 1 else \
                f"{first}-{last}/{len(stages)} {'+'.join(names)}"
            for name in names:
                if on_stage:
                    on_stage(name, "running")
            t0 = time.monotonic()
            if len(group) == 1:
                per_stage = {names[0]: self.run_stage(group[0], upstream)}
            else:
                per_stage = self.guarded(group, lambda: self.run_fused(group, upstream, self.label))
            remove_stale_temp(self.out)  # a worker killed mid-write left its temp file; its retry wrote the real one
            seconds = round(time.monotonic() - t0, 3)
            for name in names:  # a fused group's time is its first stage's (the others ran inside its tasks)
                upstream = per_stage[name]
                self.timings[name] = seconds if name == names[0] else 0.0
                results[name] = {s: c.source_dict() for s, c in upstream.items()}
                if not all(c.untouched for c in upstream.values()):  # else it said "nothing to do"
                    say(self.quiet, self.label if len(group) == 1 else name,
                        f"done in {format_seconds(self.timings[name])}: {stage_line(upstream)}")
                if on_stage:
                    on_stage(name, "done")
        return results

    def fused_groups(self, stages: list[Stage]) -> list[list[Stage]]:
        """Runs of consecutive partition stages that can share one task per partition (with
        `ray.fuse_partition_stages`): none of them runs on actors. Every other stage is alone."""
        groups: list[list[Stage]] = []
        sources = [n for n, s in self.cfg.sources.items() if s.enabled]

        def fusable(s: Stage) -> bool:
            return self.cfg.ray.fuse_partition_stages and isinstance(s, PartitionStage) \
                and not any(s.uses_setup(self.cfg, src) for src in sources)
        for s in stages:
            if groups and fusable(s) and fusable(groups[-1][-1]):
                groups[-1].append(s)
            else:
                groups.append([s])
        return groups

    def guarded(self, stages: list[Stage], fn: Callable):
        """`fn()`, with a worker's error that one of `stages` declares in `errors` as its one line."""
        try:
            return fn()
        except ray.exceptions.RayTaskError as e:
            if any(isinstance(e.cause, s.errors) for s in stages):
                raise type(e.cause)(str(e.cause)) from None
            raise

    def run_stage(self, stage: Stage, upstream: dict[str, Counts]) -> dict[str, Counts]:
        if isinstance(stage, PartitionStage):
            return self.guarded([stage], lambda: self.run_partition_stage(stage, upstream))
        if isinstance(stage, GlobalStage):
            return self.guarded([stage], lambda: stage.run(self, upstream))
        raise TypeError(f"stage {stage.name!r} is neither a PartitionStage nor a GlobalStage")

