"""Streaming readers for the sources' native file formats.

A reader turns one file into a stream of events: a `JsonRecord` (one decoded JSON object), an
`ArrowBatch` (parquet) or a `Bad` (what could not be read, where, and why). Readers never raise on
bad content: a malformed line, invalid UTF-8, a truncated stream or a missing column all become
`Bad` events, so the ingest stage can quarantine them and account for every record. They do raise
`CountMismatch` when their own count disagrees with one taken independently of the parser (a reader
bug must fail the run, not lose records), and `RemoteReadError` when the network fails for good.
Decompression (gzip members, zstd frames, and the byte and newline counts checked here) is in
`pipelines.ingest.decompress`.

Why our own line loop instead of datatrove's `JsonlReader`: datatrove skips malformed lines with a
log warning (a silent drop for our accounting) and stops at a truncated stream without saying
where; `benchmarks/ingest.py` measures this loop against it (see README for the figures).
Files are opened through fsspec (`pipelines.ingest.remote` adds retries for URLs), so local paths, hf://
and https:// all stream the same way.

JSON lines as producers write them:
- a UTF-8 byte-order mark at the start of a line (start of the file or of a concatenated part) is
  dropped; CRLF line ends are accepted;
- `NaN`, `Infinity`, `-Infinity` (Python's `json.dumps` default) are read as the strings "NaN",
  "Infinity", "-Infinity": typed columns get null (reason `non_finite`), `metadata` keeps them readable;
- lone surrogate escapes (`\\ud83d` without its pair; valid pairs decode normally): in `text` the
  record is quarantined (`lone_surrogate`, naming the code unit and character index); in any other
  field the code unit becomes U+FFFD, since metadata never costs a document its place.
  Parquet cannot hold surrogates: their UTF-8 form is invalid UTF-8 (`invalid_utf8`);
- invalid UTF-8 bytes: in `text` the line is quarantined (`invalid_utf8`); only in other fields, the
  record is kept with U+FFFD for them (as for parquet metadata columns).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from pipelines.core.report import AccountingError
from pipelines.ingest.decompress import NotCompressed, StreamStats, TrailingBytes, TruncatedStream, decompressed_chunks
from pipelines.ingest.remote import RemoteReadError, open_input

READ_BUFFER = 1 << 20  # bytes read from the (possibly remote) file per request; independent of batch size

BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass
class Bad:
    """A record (or the rest of a file) that could not be read.

    `unread_bytes`: for a record standing for the rest of a file, the file's (compressed, on-disk)
    bytes after the last byte its decoder accepted; None for a single record."""
    row: int | None
    byte_offset: int | None
    reason: str
    raw: bytes = b""
    unread_bytes: int | None = None


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


class CountMismatch(AccountingError):
    """A reader's record count disagrees with the count the format gives independently: a reader bug."""


def _lines(chunks: Iterator[bytes], partial: list[bytes] | None = None) -> Iterator[bytes]:
    """Lines of the chunks; `partial[0]` holds the incomplete line when the chunks break off."""
    rest = b""
    for chunk in chunks:
        if not chunk:
            continue
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        if partial is not None:
            partial[:] = [rest]
        yield from parts
    if rest:
        yield rest


_STREAM_ERRORS = (EOFError, zlib.error, zstandard.ZstdError, OSError, TrailingBytes, NotCompressed)


def _repair(value):
    """A JSON value decoded by the stdlib fallback, made storable: lone surrogates -> U+FFFD,
    integers beyond int64 -> their decimal string (orjson and Arrow cannot hold them), non-finite
    numbers -> the literal they were written as."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float):
        return value if math.isfinite(value) else "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    if isinstance(value, list):
        return [_repair(v) for v in value]
    if isinstance(value, dict):
        return {_repair(k): _repair(v) for k, v in value.items()}
    return value


def _parse(body: bytes) -> dict | list | str | int | float | None | tuple[str]:
    """orjson, then (for what it rejects) the stdlib parser, which reads the non-standard literals
    `NaN`/`Infinity`/`-Infinity`, lone surrogate escapes and integers beyond 64 bits.
    Returns the value, or a 1-tuple with the reason it cannot be read."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        first_error = e
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return (f"malformed_json: {first_error}",)
    if isinstance(obj, dict):
        text = obj.get("text")
        if isinstance(text, str) and (m := _SURROGATE.search(text)):
            return (f"lone_surrogate: U+{ord(m.group()):04X} without its pair at character {m.start()} of 'text'",)
        if isinstance(text, float):  # a non-finite literal as the text: not a string, not repaired into one
            return {k: (v if k == "text" else _repair(v)) for k, v in obj.items()}
    return _repair(obj)


def _parse_invalid_utf8(body: bytes, start: int) -> dict | tuple[str]:
    """A line holding invalid UTF-8: kept when the invalid bytes are only in fields other than `text`
    (they become U+FFFD there, as in parquet metadata columns); quarantined when `text` has them."""
    reason = (f"invalid_utf8: byte {start} of the line",)
    try:
        obj = json.loads(body.decode("utf-8", "surrogateescape"))  # invalid bytes -> U+DC80..U+DCFF
    except (ValueError, RecursionError):
        return reason
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or _SURROGATE.search(obj["text"]):
        return reason
    return _repair(obj)


def read_json_lines(url: str, fmt: str, max_records: int | None = None, read_buffer: int | None = None,
                    opener=None) -> Iterator[JsonRecord | Bad]:
    """One event per line of a (compressed) JSON-lines file; `row` is the 0-based line index.

    After the whole file, the rows emitted must equal the newline-terminated records of the
    decompressed stream (counted per chunk, apart from the line splitter) and the compressed bytes
    consumed must equal the file size, else `CountMismatch`. `opener(url)` returns a binary file
    object with `.size` (default: `pipelines.ingest.remote.open_input`)."""
    st = StreamStats()
    row, offset = 0, 0
    partial = [b""]
    try:
        with (opener or open_input)(url) as raw:
            st.size = getattr(raw, "size", None)
            for line in _lines(decompressed_chunks(raw, fmt, st, read_buffer or READ_BUFFER), partial):
                if max_records is not None and row >= max_records:
                    return
                n = len(line) + 1
                body = line.strip()
                if body.startswith(BOM):
                    body = body[len(BOM):].strip()
                if not body:
                    yield Bad(row, offset, "blank_line", line)
                else:
                    try:
                        body.decode("utf-8")
                    except UnicodeDecodeError as e:
                        obj = _parse_invalid_utf8(body, e.start)
                    else:
                        obj = _parse(body)
                    if isinstance(obj, tuple):
                        yield Bad(row, offset, obj[0], line)
                    elif isinstance(obj, dict):
                        yield JsonRecord(row, obj, n)
                    else:
                        yield Bad(row, offset, f"not_an_object: JSON {type(obj).__name__}", line)
                row += 1
                offset += n
    except _STREAM_ERRORS as e:
        unread = None if st.size is None else max(0, st.size - st.consumed)
        if isinstance(e, TrailingBytes):
            reason = f"trailing_bytes: {e} (after {st.members} complete members, {row} lines)"
        elif isinstance(e, TruncatedStream) and st.read == 0:
            reason = "empty_file: the file has 0 bytes"
        else:
            reason = (f"truncated_or_corrupt_file: {type(e).__name__}: {e} "
                      f"(after {row} complete lines, {offset} decompressed bytes)")
        # the excerpt is the start of the incomplete last line (from byte_offset of the decompressed stream)
        yield Bad(row, offset, reason, partial[0], unread_bytes=None if reason.startswith("empty_file") else unread)
        return
    expected = st.newlines + (1 if st.last_byte not in (b"", b"\n") else 0)
    if row != expected:
        raise CountMismatch(f"{url}: the reader emitted {row} lines but the decompressed stream holds {expected}")
    if st.size is not None and st.read != st.size:
        raise CountMismatch(f"{url}: read {st.read} of {st.size} bytes")


def _parquet_unread(size: int | None, meta, rows_read: int, groups: range | None = None) -> int | None:
    """On-disk bytes of a parquet file (or of its row `groups`) not read: the whole file when its
    footer is unreadable, else the compressed size of the row groups not wholly read."""
    if size is None:
        return None
    if meta is None:
        return size
    unread, first = 0, 0
    for i in groups if groups is not None else range(meta.num_row_groups):
        rg = meta.row_group(i)
        if first + rg.num_rows > rows_read:
            unread += compressed_bytes(rg)
        first += rg.num_rows
    return unread


def compressed_bytes(row_group) -> int:
    """On-disk bytes of a parquet row group (pyarrow's RowGroupMetaData: the sum of its column chunks)."""
    return sum(row_group.column(j).total_compressed_size for j in range(row_group.num_columns))


def read_parquet(url: str, batch_rows: int, max_records: int | None = None, opener=None,
                 piece=None) -> Iterator[ArrowBatch | Bad]:
    """Arrow batches of a parquet file, or of the row groups of `piece` (a sources.Piece: rows are
    numbered from the file's start); a file without a `text` column yields one Bad per row.
    `max_records` counts rows from the file's start.

    The rows read must add up to the row count of the file's footer (of the piece's row groups),
    else `CountMismatch`."""
    row, size, meta, groups = 0, None, None, None
    start = piece.first_row if piece is not None else 0
    try:
        with (opener or open_input)(url) as raw:
            size = getattr(raw, "size", None)
            if size == 0:
                yield Bad(None, None, "empty_file: the file has 0 bytes")
                return
            pf = pq.ParquetFile(raw)
            meta = pf.metadata
            groups = range(piece.first_group, piece.end_group) if piece is not None else range(meta.num_row_groups)
            rows = sum(meta.row_group(i).num_rows for i in groups)
            total = rows if max_records is None else max(0, min(rows, max_records - start))
            if "text" not in pf.schema_arrow.names:
                for b in pf.iter_batches(batch_size=batch_rows, row_groups=groups):
                    for r in b.slice(0, max(0, total - row)).to_pylist():
                        yield Bad(start + row, None, "missing_column: file has no 'text' column "
                                                     f"(columns: {', '.join(pf.schema_arrow.names)})",
                                  orjson.dumps(r, default=str))
                        row += 1
                    if row >= total:
                        break
            else:
                for b in pf.iter_batches(batch_size=batch_rows, row_groups=groups):
                    if row >= total:
                        break
                    b = b.slice(0, total - row)
                    yield ArrowBatch(start + row, b, b.nbytes)
                    row += b.num_rows
    except RemoteReadError:
        raise
    except (OSError, pa.ArrowException, ValueError, UnicodeDecodeError) as e:
        yield Bad(start + row if row or start else None, None,
                  f"unreadable_parquet: {type(e).__name__}: {e} (after {row} rows)",
                  unread_bytes=_parquet_unread(size, meta, row, groups))
        return
    if row != total:
        raise CountMismatch(f"{url}: the reader emitted {row} rows but the parquet footer says {total}")
