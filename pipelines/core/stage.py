"""The stage contract: what a stage declares. The executor (executor.py) does everything else.

A stage is one of two kinds:

- `PartitionStage`: a function of one partition (one input file's documents), `process(part, cfg)
  -> StageOutput(docs, counts)`. The executor runs it as Ray tasks (or, when the stage overrides
  `setup`, on Ray actors that call `setup` once and keep the model), each over a group of
  partitions one after the other (`ray.task_group_mb`, pipelines/core/grouping.py), writes the
  documents and extra tables atomically, writes the completion marker, counts progress, skips
  partitions already done with the same config, and adds up the counts per source. Consecutive
  partition stages can run fused in one task per group (`ray.fuse_partition_stages`).
- `GlobalStage`: a step over every partition at once (dedup's shuffles, tokenize's shard plan),
  `run(ex, upstream) -> {source: Counts}`, using the executor's services (`ex.map_partitions`,
  also over fixed groups of partitions that commit together, `ex.remote`, `ex.wait`, `ex.done`)
  and this module's `write_output` / `write_marker`, so that retries, markers and progress are the
  same as for partition stages.

Declared, never hand-listed elsewhere: the stage's `name` (its folder in the run), its config
`section` (and `needs`, the other sections its outputs depend on), which sources it `applies_to`,
whether it `writes_docs` (later stages then read each source's documents from it), and its Ray
resources (`ray.stage_resources.<name>`). A stage's config hash chains every stage before it in the
pipeline, so changing an upstream setting invalidates every later stage's outputs.

Adding a stage is one class and one line (`Pipeline.with_stage`): see README "Adding a stage".

The end of this module is what runs inside a worker for one partition (process, write the outputs
atomically, then the marker, log every attempt): plain functions of the run folder, so tasks ship
the stage and the config, never the driver's state.
"""

from __future__ import annotations

import dataclasses
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pyarrow as pa
import ray

from pipelines.core.counts import Counts
from pipelines.core.outputs import PartitionWriter, read_json, write_json, write_table
from pipelines.core.schema import DOC_SCHEMA, documents_file, selection
from pipelines.core.sources import SourceFile

PROGRESS_EVERY_S = 0.5  # the driver redraws progress lines every 0.5 s (executor.py's ray.wait timeout)


class RunError(RuntimeError):
    """The run cannot start or go on as asked; the message (one line) says what to do."""


@dataclass
class Partition:
    """One input file's share of a stage: its file, the run folder, and where its documents are now.
    `progress` is the run's ProgressCounter handle (None: no live counts)."""
    file: SourceFile
    run: Path
    docs: Path | None  # the newest documents of this partition (None before ingest wrote them)
    stage: str
    progress: object = None
    reported_docs: int = 0
    reported_bytes: int = 0
    unsent: tuple[int, int] = (0, 0)  # docs and bytes counted since the last message to the progress actor
    sent_at: float = 0.0

    @classmethod
    def at(cls, sf: SourceFile, run: Path, folder: str | None, stage: str, progress=None) -> Partition:
        """`sf` for `stage`, its documents in `<run>/<folder>/` (folder None: not written yet, ingest)."""
        docs = None if folder is None else run / folder / sf.source / f"{sf.part_name}.parquet"
        return cls(sf, run, docs, stage, progress)

    @property
    def source(self) -> str:
        return self.file.source

    def output(self, folder: str | None = None) -> Path:
        """`<run>/<folder or stage>/<source>/<part>.parquet`: the partition's documents in a folder."""
        return self.run / (folder or self.stage) / self.file.source / f"{self.file.part_name}.parquet"

    def table_path(self, folder: str) -> Path:
        """`<run>/<folder>/<source>__<part>.parquet`: a per-partition side table (quarantine, decisions)."""
        return self.run / folder / f"{self.file.source}__{self.file.part_name}.parquet"

    def counts(self, **kw) -> Counts:
        return Counts(self.file.source, src_file=self.file.rel, **kw)

    def docs_bytes(self) -> int:
        """Bytes of the file holding this partition's documents (a selection's text is elsewhere); 0 before ingest."""
        return int(input_bytes(documents_file(self.docs))) if self.docs is not None else 0

    def advance(self, docs: int, nbytes: int, final: bool = False) -> None:
        """Live progress from inside a long partition: `docs` more received, `nbytes` more read; sent
        to the progress actor at most every PROGRESS_EVERY_S and when `final` (a message per call cost
        each of 3,496 tiny files ~0.4 ms of actor calls per stage). The executor reports whatever a
        stage did not when the partition ends."""
        self.reported_docs += docs
        self.reported_bytes += nbytes
        self.unsent = (self.unsent[0] + docs, self.unsent[1] + nbytes)
        now = time.monotonic()
        if self.progress is not None and any(self.unsent) and (final or now - self.sent_at >= PROGRESS_EVERY_S):
            self.progress.add.remote(self.stage, *self.unsent)
            self.unsent, self.sent_at = (0, 0), now


@dataclass
class StageOutput:
    """What a partition stage returns. `docs`: the partition's documents after the stage, a table or
    an iterable of record batches in `schema` (streamed to disk; `counts` may be filled while the
    batches are consumed), or None when the stage writes no documents. `tables`: side tables by
    path, written (atomically) before the documents, e.g. quarantine records."""
    docs: pa.Table | Iterable[pa.RecordBatch] | None
    counts: Counts
    tables: dict[Path, pa.Table] = field(default_factory=dict)
    schema: pa.Schema = DOC_SCHEMA
    progress_bytes: int | None = None  # bytes the progress line counts (default: the input file's size)


class Stage:
    name: str = ""
    section: str | None = None   # config section the outputs depend on; default: `name` if Config has it
    needs: tuple[str, ...] = ()  # other config sections the outputs depend on
    writes_docs: bool = True     # later stages read the sources it applies to from `<run>/<name>/`
    # it only removes documents and adds columns, so its documents are stored as a selection of the
    # documents it read (schema.py; the text is written once per run); False: written in full
    selects: bool = True
    errors: tuple[type[BaseException], ...] = ()  # raised in a worker, these end the run with their one line

    def config_section(self, cfg) -> str | None:
        section = self.section or self.name
        return section if hasattr(cfg, section) else None

    def enabled(self, cfg) -> bool:
        section = self.config_section(cfg)
        return getattr(getattr(cfg, section), "enabled", True) if section else True

    def applies_to(self, cfg, source: str) -> bool:
        """Whether the stage reads (and so may change) `source`'s documents."""
        return True

    def params(self) -> dict:
        """What the outputs depend on besides config sections: a stage defined outside the config
        (e.g. in a test) hashes its own dataclass fields or attributes here."""
        if dataclasses.is_dataclass(self):
            return dataclasses.asdict(self)
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def check(self, cfg) -> None:
        """Driver-side checks before any task starts (one-line errors, e.g. a missing model)."""


class PartitionStage(Stage):
    def setup(self, cfg) -> None:
        """Once per worker before its first partition (load a model). A stage that overrides this is
        run on Ray actors, one `setup` each, for the partitions where `uses_setup` is true."""

    def uses_setup(self, cfg, source: str) -> bool:
        return type(self).setup is not PartitionStage.setup

    def actor_pool(self, cfg) -> tuple[int, float]:
        """(actors wanted, GPUs per actor) for a stage with `setup`; the executor caps the count by
        what the cluster has."""
        return 2, 0.0

    def task_group(self, cfg, part_file: SourceFile) -> str | None:
        """Partitions of one group (e.g. read from one host) run at most `max_per_group` at once."""
        return None

    def max_per_group(self, cfg) -> int:
        return 0

    def process(self, part: Partition, cfg) -> StageOutput:
        raise NotImplementedError

    def summarize(self, ex, counts: list[Counts], by_source: dict[str, Counts],
                  upstream: dict[str, Counts]) -> dict | None:
        """After every partition: stage-level checks and the stage's `details` for report.json."""
        return None


class GlobalStage(Stage):
    def run(self, ex, upstream: dict[str, Counts]) -> dict[str, Counts]:
        raise NotImplementedError


class Pipeline:
    """The stages of a run, in order: the one list every other list of stages derives from."""

    def __init__(self, stages: list[Stage]):
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        self.stages = list(stages)

    def __iter__(self):
        return iter(self.stages)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def doc_stages(self) -> tuple[str, ...]:
        """Stages whose folders hold documents (`<run>/<stage>/<source>/<part>.parquet`)."""
        return tuple(s.name for s in self.stages if s.writes_docs)

    def planned(self, cfg, only: list[str] | None = None) -> list[Stage]:
        """The stages a run of `cfg` goes through, in order."""
        return [s for s in self.stages if s.enabled(cfg) and (only is None or s.name in only)]

    def with_stage(self, stage: Stage, after: str) -> Pipeline:
        """A copy with `stage` inserted after the stage named `after`."""
        i = self.names.index(after)
        return Pipeline(self.stages[: i + 1] + [stage] + self.stages[i + 1:])

    def upstream_of(self, name: str) -> list[Stage]:
        return self.stages[: self.names.index(name)]

    def docs_folder(self, cfg, name: str, source: str) -> str:
        """Folder holding `source`'s newest documents when stage `name` starts: the last stage before
        it that writes documents and applies to the source (ingest applies to every source)."""
        folder = self.stages[0].name
        for s in self.upstream_of(name):
            if s.writes_docs and s.enabled(cfg) and s.applies_to(cfg, source):
                folder = s.name
        return folder

    def documents_folder(self, cfg, name: str, source: str) -> str:
        """Folder holding the full documents (the text) behind `docs_folder`: the last stage before
        `name` that writes them in full rather than as a selection (at least the first stage)."""
        folder = self.stages[0].name
        for s in self.upstream_of(name):
            if s.writes_docs and not s.selects and s.enabled(cfg) and s.applies_to(cfg, source):
                folder = s.name
        return folder

    def config_hash(self, cfg, name: str) -> str:
        """What stage `name`'s outputs depend on: its own and every earlier stage's config section and
        parameters (chained, never hand-listed), plus the sections it `needs`."""
        chain = self.upstream_of(name) + [self.stages[self.names.index(name)]]
        sections, extra = [], {}
        for s in chain:
            section = s.config_section(cfg)
            if section:
                sections.append(section)
            elif params := s.params():
                extra[f"stage:{s.name}"] = params
        sections += [n for n in chain[-1].needs if n not in sections]
        return cfg.section_hash(*sections, extra=extra)


# -- one partition inside a worker: process, commit (atomic outputs, then the marker), log


def marker_path(out: Path, step: str, sf: SourceFile) -> Path:
    return out / step / "_done" / f"{sf.source}__{sf.part_name}.json"


def task_log(out: Path, step: str, sf: SourceFile, line: str) -> None:
    """Per-task log `<run>/logs/<step>/<source>__<part>.log`: start, input, counts and seconds of
    every attempt, or the worker's traceback."""
    path = out / "logs" / step / f"{sf.source}__{sf.part_name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} pid {os.getpid()} {line}\n")


def write_marker(out: Path, step: str, config_hash: str, sf: SourceFile, stats: dict, seconds: float) -> None:
    """The completion marker: stats, config hash, input and the seconds the partition took."""
    write_json(marker_path(out, step, sf), {"config_hash": config_hash, "src_url": sf.key, "stats": stats,
                                            "seconds": round(seconds, 3)})
    shown = ", ".join(f"{k} {v}" for k, v in stats.items() if isinstance(v, (int, dict)) and k != "examples")
    task_log(out, step, sf, f"done in {seconds:.3f}s: {shown}")


def logged(out: Path, step: str, config_hash: str, fn: Callable[[SourceFile], dict]) -> Callable:
    """`fn` wrapped for a worker: logs its start and failure to the run folder, writes the marker."""
    def task(sf: SourceFile) -> dict:
        t0 = time.monotonic()
        task_log(out, step, sf, f"start {sf.key}")
        try:
            stats = fn(sf)
        except BaseException:
            task_log(out, step, sf, "failed:\n" + traceback.format_exc())
            raise
        write_marker(out, step, config_hash, sf, stats, time.monotonic() - t0)
        return stats
    return task


def grouped(out: Path, step: str, config_hash: str, fn: Callable[[SourceFile], dict]) -> Callable:
    """`fn` for a worker over a group of partitions (grouping.py): each in turn, logged and marked as
    if alone; one already marked with this config (a retried group) is not done again."""
    task = logged(out, step, config_hash, fn)

    def run(files: list[SourceFile]) -> list[dict]:
        return [_done_or(out, step, config_hash, sf, task) for sf in files]
    return run


def committed(out: Path, step: str, config_hash: str,
              fn: Callable[[list[SourceFile]], list[tuple[dict, float]]]) -> Callable:
    """`fn` for a worker over a group of partitions whose outputs are one commit (the tokenize stage:
    the files of one shard): `fn(files)` writes them and returns each file's (stats, seconds); every
    file's start and failure is logged, and its marker written only once `fn` has returned, so a
    group cut short leaves no marker and is redone whole."""
    def run(files: list[SourceFile]) -> list[dict]:
        for sf in files:
            task_log(out, step, sf, f"start {sf.key}")
        try:
            done = fn(files)
        except BaseException:
            failure = "failed:\n" + traceback.format_exc()
            for sf in files:
                task_log(out, step, sf, failure)
            raise
        for sf, (stats, seconds) in zip(files, done):
            write_marker(out, step, config_hash, sf, stats, seconds)
        return [stats for stats, _ in done]
    return run


def _done_or(out: Path, step: str, config_hash: str, sf: SourceFile, task: Callable[[SourceFile], dict]) -> dict:
    stats = done_stats(out, step, config_hash, sf)
    return task(sf) if stats is None else stats


def write_output(part: Partition, output: StageOutput, selects: bool = True) -> dict:
    """Write a partition's documents and side tables atomically; returns its counts as marker stats.
    Side tables are written first, so the documents appearing means the partition is whole.

    Documents a stage derived from documents it read (`part.docs`) are written as a selection of
    them when the stage `selects` (schema.py: src_row + added columns), so the text is never copied."""
    docs = output.docs
    if docs is None:
        for path, table in output.tables.items():
            write_table(path, table)
        return output.counts.partition_dict()
    if selects and part.docs is not None:
        if not isinstance(docs, pa.Table):
            docs = pa.Table.from_batches(list(docs), schema=output.schema)
        docs = selection(docs, documents_file(part.docs), part.output())
    writer = PartitionWriter(part.output(), docs.schema if isinstance(docs, pa.Table) else output.schema)
    if isinstance(docs, pa.Table):
        writer.write_table(docs)
    else:
        for batch in docs:
            writer.write(batch)
    writer.close(extra=output.tables)
    return output.counts.partition_dict()


def process_partition(stage: PartitionStage, cfg, part: Partition) -> dict:
    """One partition through one stage: process, write, count the progress it did not report."""
    output = stage.process(part, cfg)
    stats = write_output(part, output, stage.writes_docs and stage.selects)
    nbytes = output.progress_bytes
    if nbytes is None:
        nbytes = part.docs_bytes()
    part.advance(output.counts.read - part.reported_docs, max(nbytes - part.reported_bytes, 0), final=True)
    return stats


@ray.remote
class StageWorker:
    """A model-backed stage on one actor: `setup` once, then any number of groups of partitions."""

    def __init__(self, stage: PartitionStage, cfg):
        self.stage, self.cfg = stage, cfg
        stage.setup(cfg)

    def run(self, parts: list[Partition], config_hash: str) -> list[dict]:
        """A group of partitions, one after the other (a retried call skips those already marked)."""
        return [_done_or(p.run, p.stage, config_hash, p.file, logged(
            p.run, p.stage, config_hash, lambda sf, p=p: process_partition(self.stage, self.cfg, p))) for p in parts]


def done_stats(out: Path, step: str, config_hash: str, sf: SourceFile) -> dict | None:
    """The stats of a partition already finished with this config and input, or None."""
    marker = marker_path(out, step, sf)
    if marker.exists():
        done = read_json(marker)
        if done.get("config_hash") == config_hash and done.get("src_url") == sf.key:
            return done["stats"]
    return None


def source_bytes(sf: SourceFile) -> float:
    """Bytes on disk of a partition's input files (a bundle's members): its weight before ingest."""
    return sum(input_bytes(f.url) for f in sf.files)


def input_bytes(path: str | Path) -> float:
    """Size of a partition's input: its weight in the ETA (1 for remote files, not listed again)."""
    if "://" in str(path):
        return 1.0
    try:
        return float(max(os.path.getsize(path), 1))
    except OSError:
        return 1.0
