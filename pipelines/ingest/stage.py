"""The ingest stage: one input file in its native format -> `ingest/<source>/<part>.parquet`
(DOC_SCHEMA), unreadable records -> `quarantine/<source>__<part>.parquet` with a reason."""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.core.counts import Counts
from pipelines.core.sources import SourceFile
from pipelines.core.stage import Partition, PartitionStage, RunError, StageOutput, write_output
from pipelines.ingest.normalise import normalised_batches
from pipelines.ingest.readers import CountMismatch
from pipelines.ingest.remote import RemoteReadError, RetryPolicy, host_of

log = logging.getLogger("zyda2")


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
        batches = normalised_batches(part.file, cfg.ingest, counts, tables, part.table_path("quarantine"),
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
    batches = normalised_batches(sf, cfg, counts, tables, part.table_path("quarantine"), part.advance, network)
    return write_output(part, StageOutput(batches, counts, tables))
