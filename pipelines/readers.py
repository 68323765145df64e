"""Streaming readers for the sources' native file formats.

A reader turns one file into a stream of events: a `Record` (one decoded JSON object, or one Arrow
batch for parquet) or a `Bad` (what could not be read, where, and why). Readers never raise on bad
content: a malformed line, invalid UTF-8, a truncated gzip stream or a missing column all become
`Bad` events, so the ingest stage can quarantine them and account for every record.

Why our own line loop instead of datatrove's `JsonlReader`: datatrove skips malformed lines with a
log warning (a silent drop for our accounting) and stops at a truncated stream without saying
where; `benchmarks/ingest.py` measures this loop against it (see README for the figures).
Files are opened through fsspec, so local paths, hf:// and https:// all stream the same way.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Iterator

import fsspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

READ_BUFFER = 1 << 20  # bytes read from the (possibly remote) file per request; independent of batch size


@dataclass
class Bad:
    """A record (or the rest of a file) that could not be read."""
    row: int | None
    byte_offset: int | None
    reason: str
    raw: bytes = b""


@dataclass
class JsonRecord:
    row: int
    obj: dict
    n_bytes: int


@dataclass
class ArrowBatch:
    start_row: int
    batch: pa.RecordBatch
    n_bytes: int


class TruncatedStream(EOFError):
    """The compressed stream ended before its end-of-stream marker."""


def _decompressed_chunks(raw: io.BufferedIOBase, fmt: str) -> Iterator[bytes]:
    """Decompressed bytes in chunks, yielding everything that decoded before a truncation or
    corruption is raised (a buffered line reader would lose the complete lines just before it)."""
    if fmt == "jsonl":
        while chunk := raw.read(READ_BUFFER):
            yield chunk
        return
    new = (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)) if fmt == "jsonl.gz" \
        else (lambda: zstandard.ZstdDecompressor().decompressobj())
    d = new()
    while chunk := raw.read(READ_BUFFER):
        while chunk:
            yield d.decompress(chunk)
            chunk = b""
            if d.eof and d.unused_data:  # concatenated members / frames
                chunk, d = d.unused_data, new()
    if not d.eof:
        raise TruncatedStream("compressed stream ended before its end-of-stream marker")


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        if not chunk:
            continue
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


_STREAM_ERRORS = (EOFError, zlib.error, zstandard.ZstdError, OSError)


def read_json_lines(url: str, fmt: str, max_records: int | None = None) -> Iterator[JsonRecord | Bad]:
    """One event per line of a (compressed) JSON-lines file; `row` is the 0-based line index."""
    row, offset = 0, 0
    try:
        with fsspec.open(url, "rb", block_size=READ_BUFFER) as raw:
            for line in _lines(_decompressed_chunks(raw, fmt)):
                if max_records is not None and row >= max_records:
                    return
                n = len(line) + 1
                body = line.strip()
                if not body:
                    yield Bad(row, offset, "blank_line", line)
                else:
                    try:
                        body.decode("utf-8")
                    except UnicodeDecodeError as e:
                        yield Bad(row, offset, f"invalid_utf8: byte {e.start} of the line", line)
                    else:
                        try:
                            obj = orjson.loads(body)
                        except orjson.JSONDecodeError as e:
                            yield Bad(row, offset, f"malformed_json: {e}", line)
                        else:
                            if isinstance(obj, dict):
                                yield JsonRecord(row, obj, n)
                            else:
                                yield Bad(row, offset, f"not_an_object: JSON {type(obj).__name__}", line)
                row += 1
                offset += n
    except _STREAM_ERRORS as e:
        yield Bad(row, offset, f"truncated_or_corrupt_file: {type(e).__name__}: {e} "
                               f"(after {row} complete lines, {offset} decompressed bytes)")


def read_parquet(url: str, batch_rows: int, max_records: int | None = None) -> Iterator[ArrowBatch | Bad]:
    """Arrow batches of a parquet file; a file without a `text` column yields one Bad per row."""
    row = 0
    try:
        with fsspec.open(url, "rb", block_size=READ_BUFFER) as raw:
            pf = pq.ParquetFile(raw)
            total = pf.metadata.num_rows if max_records is None else min(pf.metadata.num_rows, max_records)
            if "text" not in pf.schema_arrow.names:
                for b in pf.iter_batches(batch_size=batch_rows):
                    for r in b.slice(0, max(0, total - row)).to_pylist():
                        yield Bad(row, None, "missing_column: file has no 'text' column "
                                             f"(columns: {', '.join(pf.schema_arrow.names)})",
                                  orjson.dumps(r, default=str))
                        row += 1
                    if row >= total:
                        return
                return
            for b in pf.iter_batches(batch_size=batch_rows):
                if row >= total:
                    return
                b = b.slice(0, total - row)
                yield ArrowBatch(row, b, b.nbytes)
                row += b.num_rows
    except (OSError, pa.ArrowException, ValueError) as e:
        yield Bad(row if row else None, None, f"unreadable_parquet: {type(e).__name__}: {e} (after {row} rows)")
