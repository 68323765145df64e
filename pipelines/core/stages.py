"""What every stage shares: its context, the per-partition task runner, counts.

Each stage receives the per-source counts of the stage before it and returns its own:
`{source: {"in", "out", "removed": {reason: n}, "quarantined", "chars_out"}}`. The runner checks
that counts chain (`in` of a stage == `out` of the one before) and that every document read is
kept, removed with a reason, or quarantined.

Partitioned work goes through `run_partitions`: one Ray task per partition, each writing its
outputs atomically and then a completion marker that records the stage's config hash. A resumed
run skips partitions whose marker matches, whatever the number of workers it now has.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ray

from pipelines.core.config import Config, is_url
from pipelines.ingest.normalise import ingest_file
from pipelines.ingest.readers import CountMismatch
from pipelines.ingest.remote import RemoteReadError, RetryPolicy, host_of
from pipelines.core.outputs import read_json, write_json
from pipelines.core.progress import ProgressDisplay, say
from pipelines.core.sources import SourceFile

log = logging.getLogger("zyda2")


@dataclass
class StageContext:
    cfg: Config
    out: Path
    files: list[SourceFile]
    progress: object  # ProgressCounter actor handle
    quiet: bool = False
    # per source, the folder holding its newest documents: a stage that changes a source's documents
    # writes them anew and points here; a source a stage does not touch is never copied
    docs_dirs: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)  # stage-level figures for report.json
    partition_stats: dict[str, list[dict]] = field(default_factory=dict)  # per stage, in file order
    label: str = ""  # of the running stage in progress lines: `3/6 dedup`
    allow_empty: bool = False  # a source that ingests no document goes on (else: RunError)

    def docs_path(self, sf: SourceFile, docs_dirs: dict[str, str] | None = None) -> Path:
        """Where `sf`'s documents are now (or were when `docs_dirs` was copied)."""
        return self.out / (docs_dirs or self.docs_dirs).get(sf.source, "ingest") / sf.source / f"{sf.part_name}.parquet"


def marker_path(out: Path, stage: str, sf: SourceFile) -> Path:
    return out / stage / "_done" / f"{sf.source}__{sf.part_name}.json"


def log_path(out: Path, stage: str, sf: SourceFile) -> Path:
    """Per-task log: start, input, counts and seconds of every attempt, or the worker's traceback."""
    return out / "logs" / stage / f"{sf.source}__{sf.part_name}.log"


def task_log(out: Path, stage: str, sf: SourceFile, line: str) -> None:
    path = log_path(out, stage, sf)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid {os.getpid()} {line}\n")


def write_marker(out: Path, stage: str, config_hash: str, sf: SourceFile, stats: dict, seconds: float) -> None:
    """The completion marker: stats, config hash, input and the seconds the partition took."""
    write_json(marker_path(out, stage, sf), {"config_hash": config_hash, "src_url": sf.url, "stats": stats,
                                             "seconds": round(seconds, 3)})
    task_log(out, stage, sf, f"done in {seconds:.3f}s: {_counts(stats)}")


def _counts(stats: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats.items() if isinstance(v, (int, dict)) and k != "examples")


def logged_task(out: Path, stage: str, config_hash: str, fn: Callable[[SourceFile], dict]) -> Callable:
    """`fn` wrapped for a Ray task: logs its start and failure to the run folder, writes the marker."""
    def task(sf: SourceFile) -> dict:
        t0 = time.monotonic()
        task_log(out, stage, sf, f"start {sf.url}")
        try:
            stats = fn(sf)
        except BaseException:
            task_log(out, stage, sf, "failed:\n" + traceback.format_exc())
            raise
        write_marker(out, stage, config_hash, sf, stats, time.monotonic() - t0)
        return stats
    return task


def input_bytes(sf: SourceFile) -> float:
    """Size of a partition's input file: its weight in the ETA (1 for remote files, not listed again)."""
    if is_url(sf.url):
        return 1.0
    try:
        return float(max(os.path.getsize(sf.url), 1))
    except OSError:
        return 1.0


def docs_in(stats: dict) -> int:
    """Documents a partition task received, whatever the stage calls them."""
    return int(stats.get("read", stats.get("docs", 0)))


def done_stats(ctx: StageContext, stage: str, config_hash: str, sf: SourceFile) -> dict | None:
    """The stats of a partition already finished with this config, or None."""
    marker = marker_path(ctx.out, stage, sf)
    if marker.exists():
        done = read_json(marker)
        if done.get("config_hash") == config_hash and done.get("src_url") == sf.url:
            return done["stats"]
    return None


def run_partitions(ctx: StageContext, stage: str, config_hash: str,
                   fn: Callable[[SourceFile], dict], files: list[SourceFile] | None = None,
                   label: str | None = None, display: ProgressDisplay | None = None,
                   group_of: Callable[[SourceFile], str | None] | None = None, group_limit: int = 0) -> list[dict]:
    """Run `fn` on every input partition (or on `files`) as Ray tasks; reuse the stats of partitions
    already done. Results come in the order of the files. A `display` given is updated, not closed
    (the caller has more work in the same stage). With `group_of`, at most `group_limit` tasks of one
    group (e.g. the host a remote file is read from) run at once."""
    files = ctx.files if files is None else files
    results: dict[int, dict] = {}
    todo = []
    for i, sf in enumerate(files):
        stats = done_stats(ctx, stage, config_hash, sf)
        if stats is None:
            todo.append(i)
        else:
            results[i] = stats

    if not files:
        if display is None:
            say(ctx.quiet, label or ctx.label or stage, "nothing to do: no partition goes through this stage")
        return []
    task = logged_task(ctx.out, stage, config_hash, fn)
    remote = ray.remote(task).options(**ctx.cfg.ray.task_options(stage),
                                      max_retries=ctx.cfg.ray.max_retries)
    running: dict[str | None, int] = {}
    waiting = list(todo)
    pending: dict = {}

    def submit():
        for i in list(waiting):
            group = group_of(files[i]) if group_of else None
            if group is not None and running.get(group, 0) >= group_limit:
                continue
            waiting.remove(i)
            running[group] = running.get(group, 0) + 1
            pending[remote.remote(files[i])] = i

    submit()
    own = display is None
    if own:
        display = ProgressDisplay(stage, len(files), ctx.progress, ctx.quiet, label=label or ctx.label or stage,
                                  weights=[input_bytes(sf) for sf in files])
    for i, stats in results.items():
        display.skip(docs_in(stats), input_bytes(files[i]))
    display.update()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
        for ref in ready:
            i = pending.pop(ref)
            running[group_of(files[i]) if group_of else None] -= 1
            results[i] = ray.get(ref)
            display.update(1, input_bytes(files[i]))
        if not ready:
            display.update()
        submit()
    if own:
        display.close(sum(docs_in(r) for r in results.values()))
    return [results[i] for i in range(len(files))]


def wait_all(ctx: StageContext, stage: str, refs: list, docs: int | None = None, label: str | None = None) -> list:
    """`ray.get(refs)` with a progress line (partitions done, elapsed, ETA); `docs` is the stage's
    document count for its closing line (None: a step that counts no documents, e.g. dedup's buckets)."""
    display = ProgressDisplay(stage, len(refs), None, ctx.quiet, label=label or ctx.label or stage)
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


def empty_counts() -> dict:
    return {"in": 0, "out": 0, "removed": {}, "quarantined": 0, "chars_out": 0}


def sum_by_source(stats: list[dict], sources=()) -> dict[str, dict]:
    """Per-source totals of partition stats; every name in `sources` gets a row, even with no files.
    Partition `read` becomes `in`; every other count adds up, plain (tokens, ...) or per reason
    (removed, quarantine_reasons, removed_chars). Anything else (examples, names) is left out."""
    out: dict[str, dict] = {name: empty_counts() for name in sources}
    for s in stats:
        agg = out.setdefault(s["source"], empty_counts())
        for key, value in s.items():
            key = "in" if key == "read" else key
            if isinstance(value, int):
                agg[key] = agg.get(key, 0) + value
            elif isinstance(value, dict) and value and all(isinstance(v, int) for v in value.values()):
                per_reason = agg.setdefault(key, {})
                for reason, n in value.items():
                    per_reason[reason] = per_reason.get(reason, 0) + n
    for agg in out.values():
        for key, value in agg.items():
            if isinstance(value, dict):
                agg[key] = dict(sorted(value.items()))
    return dict(sorted(out.items()))


class Stage:
    name: str = ""

    def enabled(self, cfg: Config) -> bool:
        return getattr(cfg, self.name).enabled

    def run(self, ctx: StageContext, upstream: dict[str, dict]) -> dict[str, dict]:
        raise NotImplementedError


class IngestStage(Stage):
    name = "ingest"

    def enabled(self, cfg: Config) -> bool:
        return True

    def run(self, ctx, upstream):
        cfg, out, progress, net = ctx.cfg.ingest, ctx.out, ctx.progress, ctx.cfg.network
        config_hash = ctx.cfg.section_hash("ingest")
        policy = RetryPolicy(net.retries, net.backoff_s, net.max_backoff_s, net.timeout_s)
        try:
            stats = run_partitions(ctx, self.name, config_hash,
                                   lambda sf: ingest_file(sf, cfg, out, progress, policy),
                                   group_of=lambda sf: host_of(sf.url), group_limit=net.max_connections_per_host)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, (RemoteReadError, CountMismatch)):  # one line, not a worker traceback
                raise type(e.cause)(str(e.cause)) from None
            raise
        incomplete = {f"{s['source']}/{f}": n for s in stats for f, n in s.get("incomplete_files", {}).items()}
        for name, unread in sorted(incomplete.items()):  # the run summary names every file not read to its end
            log.warning("ingest: %s was not read to its end (%d bytes unread on disk; see quarantine)", name, unread)
        ctx.details["ingest"] = {"incomplete_files": dict(sorted(incomplete.items())),
                                 "unread_bytes": sum(incomplete.values())}
        by_source = sum_by_source(stats, [name for name, src in ctx.cfg.sources.items() if src.enabled])
        empty = [name for name, c in by_source.items() if c["out"] == 0]
        if empty and (not ctx.allow_empty or len(empty) == len(by_source)):
            from pipelines.core.run import RunError
            why = "; ".join(f"{name}: {c['in']:,} records read, {c['quarantined']:,} quarantined"
                            + (f" ({', '.join(f'{r} {n:,}' for r, n in c['quarantine_reasons'].items())})"
                               if c.get("quarantine_reasons") else "")
                            for name, c in by_source.items() if name in empty)
            where = f"records and reasons in {out / 'quarantine'}"
            if len(empty) == len(by_source):  # nothing left for any later stage: never a run
                raise RunError(f"no document survived ingest in any source ({why}; {where}); fix the input")
            raise RunError(f"no document survived ingest for source {', '.join(empty)} ({why}; {where}); fix the "
                           f"input, leave it out with --sources {','.join(n for n in by_source if n not in empty)}, "
                           "or pass --allow-empty")
        return by_source
