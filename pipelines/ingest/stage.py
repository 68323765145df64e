"""The ingest stage: one input file (or each file of a bundle, in order) in its native format ->
`ingest/<source>/<part>.parquet` (DOC_SCHEMA), unreadable records -> `quarantine/<source>__<part>.parquet`
with a reason. A bundle's completion marker also counts each of its files (`files`: read, out,
quarantined per `src_file`)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.counts import Counts
from pipelines.core.sources import SourceFile
from pipelines.core.stage import Partition, PartitionStage, RunError, StageOutput, write_output
from pipelines.ingest.normalise import Normaliser
from pipelines.ingest.readers import ArrowBatch, Bad, CountMismatch, JsonRecord, read_json_lines, read_parquet
from pipelines.ingest.remote import RemoteReadError, RetryPolicy, host_of, open_input

log = logging.getLogger("zyda2")

MAX_BATCH_TEXT_BYTES = 64 << 20  # flush a batch early when its text exceeds this (huge documents)


class IngestStage(PartitionStage):
    name = "ingest"
    errors = (RemoteReadError, CountMismatch)  # the run's answer in one line, not a worker traceback

    def enabled(self, cfg) -> bool:
        return True

    def task_group(self, cfg, part_file: SourceFile) -> str | None:
        return host_of(part_file.url)  # the Hub rate-limits: a cap on files read at once from one host

    def max_per_group(self, cfg) -> int:
        return cfg.network.max_connections_per_host

    def process(self, part: Partition, cfg) -> StageOutput:
        net = cfg.network
        policy = RetryPolicy(net.retries, net.backoff_s, net.max_backoff_s, net.timeout_s)
        counts, tables = part.counts(), {}
        batches = partition_batches(part.file, cfg.ingest, counts, tables, part.table_path("quarantine"),
                                    part.advance, policy)
        return StageOutput(batches, counts, tables, progress_bytes=0)  # bytes were reported while reading

    def summarize(self, ex, counts: list[Counts], by_source: dict[str, Counts], upstream) -> dict:
        incomplete = {f"{c.source}/{f}": n for c in counts for f, n in c.figures.get("incomplete_files", {}).items()}
        for name, unread in sorted(incomplete.items()):  # the run summary names every file not read to its end
            log.warning("ingest: %s was not read to its end (%d bytes unread on disk; see quarantine)", name, unread)
        empty = [name for name, c in by_source.items() if c.out == 0]
        if empty and (not ex.allow_empty or len(empty) == len(by_source)):
            why = "; ".join(f"{name}: {c.read:,} records read, {c.quarantined:,} quarantined"
                            + (f" ({', '.join(f'{r} {n:,}' for r, n in reasons.items())})"
                               if (reasons := c.figures.get("quarantine_reasons")) else "")
                            for name, c in by_source.items() if name in empty)
            where = f"records and reasons in {ex.out / 'quarantine'}"
            if len(empty) == len(by_source):  # nothing left for any later stage: never a run
                raise RunError(f"no document survived ingest in any source ({why}; {where}); fix the input")
            raise RunError(f"no document survived ingest for source {', '.join(empty)} ({why}; {where}); fix the "
                           f"input, leave it out with --sources {','.join(n for n in by_source if n not in empty)}, "
                           "or pass --allow-empty")
        return {"incomplete_files": dict(sorted(incomplete.items())), "unread_bytes": sum(incomplete.values())}


def ingest_file(sf: SourceFile, cfg, out_root: Path, progress=None, network: RetryPolicy | None = None) -> dict:
    """Ingest one file outside a run (tests, benchmarks): writes what the stage writes for it and
    returns its counts as marker stats. `cfg` is an IngestConfig."""
    part = Partition(sf, Path(out_root), None, IngestStage.name, progress)
    counts, tables = part.counts(), {}
    batches = partition_batches(sf, cfg, counts, tables, part.table_path("quarantine"), part.advance, network)
    return write_output(part, StageOutput(batches, counts, tables))


def partition_batches(sf: SourceFile, cfg, counts: Counts, quarantine: dict[Path, pa.Table],
                      quarantine_path: Path, advance=None, network: RetryPolicy | None = None
                      ) -> Iterator[pa.RecordBatch]:
    """`normalised_batches` of a partition: of its file, or of each file of a bundle in turn (each with
    its own ids and provenance) into one stream, one quarantine table and `counts` summed over the
    files, with each file's own counts in `counts.notes["files"]` {src_file: {read, out, quarantined}}."""
    if not sf.members:
        yield from normalised_batches(sf, cfg, counts, quarantine, quarantine_path, advance, network)
        return
    tables, files, pending, rows, nbytes = [], {}, [], 0, 0
    for member in sf.members:
        mine, bad = Counts(sf.source, src_file=member.rel), {}
        for batch in normalised_batches(member, cfg, mine, bad, quarantine_path, advance, network):
            # small files' batches are written together: a row group per file cost 0.55 ms each
            pending.append(batch)
            rows, nbytes = rows + batch.num_rows, nbytes + batch.get_total_buffer_size()
            if rows >= cfg.batch_docs or nbytes >= MAX_BATCH_TEXT_BYTES:
                yield pa.concat_batches(pending)
                pending, rows, nbytes = [], 0, 0
        counts.add(mine)
        tables += bad.values()
        files[member.rel] = {"read": mine.read, "out": mine.out, "quarantined": mine.quarantined}
    if pending:
        yield pa.concat_batches(pending)
    if tables:
        quarantine[quarantine_path] = pa.concat_tables(tables)
    counts.notes["files"] = files


def normalised_batches(sf: SourceFile, cfg, counts: Counts, quarantine: dict[Path, pa.Table],
                       quarantine_path: Path, advance=None, network: RetryPolicy | None = None
                       ) -> Iterator[pa.RecordBatch]:
    """Read one input file and yield its documents as DOC_SCHEMA batches of at most
    `cfg.batch_docs` documents (`cfg`: the `ingest` config section). As the batches are consumed,
    `counts` fills in (figures:
    `quarantine_reasons`, `typed_nulls` {"<column>:<why>": n} for native values that could not be
    cast, `incomplete_files` {src_file: unread on-disk bytes} for a file whose rest could not be
    read); when they are exhausted, `quarantine[quarantine_path]` holds the quarantine records, if
    any. `advance(docs, nbytes)` reports live progress.

    Raises `CountMismatch` (reader count != the format's own count) and `RemoteReadError`."""
    opener = functools.partial(open_input, policy=network)
    norm = Normaliser(sf, cfg.excerpt_chars)
    read = nbytes = 0
    since_report = 0
    incomplete: dict[str, int] = {}

    def flush():
        for batch in norm.take_batches():
            counts.out += batch.num_rows
            counts.chars_out += pc.sum(pc.utf8_length(batch.column("text"))).as_py() or 0
            yield batch

    if sf.fmt == "parquet":
        events = read_parquet(sf.url, cfg.batch_docs, cfg.max_docs_per_file, opener=opener, piece=sf.piece)
    else:
        events = read_json_lines(sf.url, sf.fmt, cfg.max_docs_per_file, opener=opener)
    for ev in events:
        if isinstance(ev, JsonRecord):
            norm.add_json(ev.row, ev.obj, ev.n_bytes)
            read += 1
            nbytes += ev.n_bytes
            since_report += 1
        elif isinstance(ev, ArrowBatch):
            norm.add_arrow(ev.start_row, ev.batch)
            norm.text_bytes += ev.n_bytes
            read += ev.batch.num_rows
            nbytes += ev.n_bytes
            since_report += ev.batch.num_rows
        elif isinstance(ev, Bad):
            norm.bad(ev.row, ev.byte_offset, ev.reason, ev.raw, ev.unread_bytes)
            read += 1
            if ev.unread_bytes is not None:
                incomplete[sf.rel] = ev.unread_bytes
            since_report += 1  # live counts are of records read, as the report's `in`
        if len(norm) >= cfg.batch_docs or norm.text_bytes >= MAX_BATCH_TEXT_BYTES:
            yield from flush()
        if advance is not None and since_report >= cfg.batch_docs:
            advance(since_report, nbytes)
            since_report, nbytes = 0, 0
    if len(norm):
        yield from flush()
    if advance is not None and (since_report or nbytes):
        advance(since_report, nbytes)
    table = norm.take_quarantine()
    if table.num_rows:
        quarantine[quarantine_path] = table
    counts.read, counts.quarantined = read, table.num_rows
    counts.figures.update(quarantine_reasons=dict(sorted(norm.reasons.items())),
                          typed_nulls=dict(sorted(norm.typed_nulls.items())), incomplete_files=incomplete)
