"""Ingest stage: one native input file -> one normalised parquet partition + its quarantine.

Runs inside a Ray task (one per file). Memory is bounded by `ingest.batch_docs` and
`MAX_BATCH_TEXT_BYTES`, never by the file size. Outputs are written to temporary names and renamed
only when complete, the stats file last, so a partition either exists whole or not at all.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.schema import DOC_SCHEMA, QUARANTINE_SCHEMA
from pipelines.core.sources import SOURCES, SourceFile, make_id

_TYPED = {"url": str, "native_id": str, "int_score": int, "edu_score": float, "dclm_fasttext_prob": float}
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _typed(value, tp) -> tuple[object, str | None]:
    """(`value` cast to the typed column's type, None) or (None, why not).

    Native types drift between dumps and producers (FineWeb-Edu `int_score` int64 / int32 / double,
    `score` float32 / double, numbers as strings, `NaN` from Python's json): a value is cast when it is
    integral / parseable and finite, null otherwise; the original stays in `metadata` either way."""
    if type(value) is tp and (tp is not float or math.isfinite(value)):  # the common case, first
        return value, None
    if value is None:
        return None, None
    if isinstance(value, bool):
        return None, "bool"
    if tp is str:
        if isinstance(value, str):
            return value, None
        return (str(value), None) if isinstance(value, int) else (None, type(value).__name__)
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return None, "not_a_number"
    elif isinstance(value, Decimal):
        value = int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            return None, "out_of_range"
        return (float(value) if tp is float else value), None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, "non_finite"
        if tp is float:
            return value, None
        return (int(value), None) if value.is_integer() and _INT64[0] <= value <= _INT64[1] \
            else (None, "non_integral")
    return None, type(value).__name__


def _nested_url(source: str, obj: dict) -> str | None:
    """URL hidden inside a nested native field (Dolma `metadata.url`, Zyda `source_other.url`)."""
    field = SOURCES[source].url_field
    holder = obj.get(field) if field else None
    if isinstance(holder, str):
        try:
            holder = orjson.loads(holder)
        except orjson.JSONDecodeError:
            return None
    url = holder.get("url") if isinstance(holder, dict) else None
    return url if isinstance(url, str) else None


def _text_as_utf8(col: pa.Array) -> pa.Array | None:
    """`col` as a `string` array when it holds strings in any Arrow encoding (string, large_string,
    string_view, dictionary of these, binary/large_binary/binary_view as UTF-8); None otherwise.
    Not validated: see `invalid_utf8_rows`."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if pa.types.is_string(t):
        return col
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return col.cast(pa.large_binary() if pa.types.is_large_string(t) else pa.binary()) \
            .cast(pa.binary()).view(pa.string())
    if pa.types.is_binary(t):
        return col.view(pa.string())
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return col.cast(pa.binary()).view(pa.string())
    return None


def invalid_utf8_rows(col: pa.Array) -> list[int]:
    """Indices of the values of a `string` array that are not valid UTF-8, in order.

    Arrow's full validation is vectorised (C++) but stops at the first bad value, so the array is
    bisected: O(k log n) validations for k bad values, one pass when there are none."""
    try:
        col.validate(full=True)
        return []
    except pa.ArrowInvalid:
        pass
    if len(col) == 1:
        return [0]
    half = len(col) // 2
    return invalid_utf8_rows(col.slice(0, half)) + [half + i for i in invalid_utf8_rows(col.slice(half))]


def _first_bad_byte(col: pa.Array, i: int) -> int:
    raw = col.view(pa.binary())[i].as_py()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start
    return -1


class Normaliser:
    """Accumulates documents of one file as DOC_SCHEMA columns and quarantine records.

    Text is checked once, here, so no later stage meets text it cannot process: missing / null /
    non-string, invalid UTF-8 (Arrow columns; JSON lines are checked per line by the reader), empty
    (`empty_text`) and only Unicode whitespace (`blank_text`, Python's `str.isspace` = Arrow's
    `utf8_is_space`) are quarantined with their reason."""

    def __init__(self, sf: SourceFile, excerpt_chars: int):
        self.sf = sf
        self.excerpt_chars = excerpt_chars
        self.lifted = SOURCES[sf.source].lifted
        self.quarantine: dict[str, list] = {n: [] for n in QUARANTINE_SCHEMA.names}
        self.reasons: dict[str, int] = {}
        self.typed_nulls: dict[str, int] = {}  # "<column>:<why>" -> native values that became null
        self.unread_bytes = 0

        self.cols: dict[str, list] = {n: [] for n in DOC_SCHEMA.names}
        self.ready: list[pa.RecordBatch] = []  # sealed batches, in row order
        self.ready_docs = 0
        self.text_bytes = 0

    def __len__(self):
        return len(self.cols["nemo_id"]) + self.ready_docs

    def bad(self, row: int | None, offset: int | None, reason: str, raw: bytes | str, unread_bytes: int | None = None):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        q = self.quarantine
        q["source"].append(self.sf.source)
        q["src_file"].append(self.sf.rel)
        q["src_row"].append(row)
        q["byte_offset"].append(offset)
        q["reason"].append(reason)
        q["excerpt"].append(text[: self.excerpt_chars])
        q["unread_bytes"].append(unread_bytes)
        self.unread_bytes += unread_bytes or 0
        key = reason.split(":", 1)[0]
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def _note(self, key: str, n: int = 1):
        self.typed_nulls[key] = self.typed_nulls.get(key, 0) + n

    def _split(self, native: dict) -> tuple[dict, dict]:
        """(typed columns lifted out of the native fields, every other native field verbatim)."""
        lifted, rest = {}, {}
        for k, v in native.items():
            if k == "text":
                continue
            target = self.lifted.get(k)
            typed, why = _typed(v, _TYPED[target]) if target else (None, None)
            if typed is not None:
                lifted[target] = typed
            else:
                if isinstance(v, float) and not math.isfinite(v):  # readable in metadata, as JSON lines have it
                    v = "NaN" if v != v else "Infinity" if v > 0 else "-Infinity"
                rest[k] = v
                if why:
                    self._note(f"{target}:{why}")
        if "url" not in lifted:
            lifted["url"] = _nested_url(self.sf.source, native)
        return lifted, rest

    def add_json(self, row: int, obj: dict, raw_len: int):
        text = obj.get("text", _MISSING)
        problem = ("missing_text: record has no 'text' field" if text is _MISSING
                   else "null_text: 'text' is null" if text is None
                   else f"text_not_string: 'text' is {type(text).__name__}" if not isinstance(text, str)
                   else "empty_text: 'text' is an empty string" if not text
                   else "blank_text: 'text' holds only whitespace" if text.isspace() else None)
        if problem:
            self.bad(row, None, problem, orjson.dumps(obj)[: self.excerpt_chars * 4])
            return
        c = self.cols
        c["nemo_id"].append(make_id(self.sf.id_prefix, row, self.sf.partition))
        c["source"].append(self.sf.source)
        c["text"].append(text)
        c["src_file"].append(self.sf.rel)
        c["src_row"].append(row)
        lifted, rest = self._split(obj)
        for name in _TYPED:
            c[name].append(lifted.get(name))
        c["metadata"].append(orjson.dumps(rest).decode())
        self.text_bytes += raw_len

    def _native_rows(self, batch: pa.RecordBatch, names: list[str]) -> list[dict]:
        """The non-text columns as Python rows. Invalid UTF-8 in a string column becomes U+FFFD
        (metadata never costs a document its place); a column Python cannot represent becomes null."""
        if not names:
            return [{}] * batch.num_rows
        values = []
        for name in names:
            col = batch.column(name)
            t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
            if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
                as_str = _text_as_utf8(col)
                if bad := invalid_utf8_rows(as_str):
                    self._note(f"{name}:invalid_utf8_replaced", len(bad))
                    col = pa.array([None if v is None else v.decode("utf-8", "replace")
                                    for v in as_str.view(pa.binary()).to_pylist()], pa.string())
            try:
                values.append(col.to_pylist())
            except (UnicodeDecodeError, pa.ArrowException, ValueError, OverflowError):
                self._note(f"{name}:unreadable", batch.num_rows)
                values.append([None] * batch.num_rows)
        return [dict(zip(names, row)) for row in zip(*values)]

    def add_arrow(self, start_row: int, batch: pa.RecordBatch):
        """Columnar path for parquet: text stays in Arrow (no Python strings), only the small native
        columns go through Python. Pending JSON rows are sealed first so row order is kept."""
        raw_text = batch.column("text")
        others = [n for n in batch.schema.names if n != "text"]
        text = _text_as_utf8(raw_text)
        if text is None:
            for i in range(batch.num_rows):
                self.bad(start_row + i, None, f"text_not_string: 'text' column is {raw_text.type}",
                         str(raw_text[i].as_py()))
            return
        invalid = invalid_utf8_rows(text)
        valid_idx = np.arange(len(text))
        if invalid:  # Arrow's string kernels may only see valid UTF-8: they run on the valid rows
            valid_idx = np.delete(valid_idx, invalid)
            clean = text.take(pa.array(valid_idx))
        else:
            clean = text
        keep = pc.fill_null(pc.and_(pc.greater(pc.binary_length(clean), 0),
                                    pc.invert(pc.utf8_is_space(clean))), False)
        keep_idx = valid_idx[keep.to_numpy(zero_copy_only=False)]
        rows = self._native_rows(batch, others)
        if len(keep_idx) < batch.num_rows:
            bad_utf8 = set(invalid)
            kept = set(keep_idx.tolist())
            for i in range(batch.num_rows):
                if i in kept:
                    continue
                if i in bad_utf8:
                    reason = f"invalid_utf8: byte {_first_bad_byte(text, i)} of 'text'"
                    excerpt = text.view(pa.binary())[i].as_py()
                elif not text[i].is_valid:
                    reason, excerpt = "null_text: 'text' is null", orjson.dumps(rows[i], default=str)
                elif len(text[i].as_py()) == 0:
                    reason, excerpt = "empty_text: 'text' is an empty string", orjson.dumps(rows[i], default=str)
                else:
                    reason, excerpt = "blank_text: 'text' holds only whitespace", text[i].as_py()
                self.bad(start_row + i, None, reason, excerpt)
        if not len(keep_idx):
            return
        self._seal()
        cols: dict[str, list] = {n: [] for n in DOC_SCHEMA.names if n != "text"}
        for i in keep_idx.tolist():
            row = start_row + i
            cols["nemo_id"].append(make_id(self.sf.id_prefix, row, self.sf.partition))
            cols["src_row"].append(row)
            lifted, rest = self._split(rows[i])
            for name in _TYPED:
                cols[name].append(lifted.get(name))
            cols["metadata"].append(orjson.dumps(rest, default=str).decode())
        n = len(keep_idx)
        cols["source"] = [self.sf.source] * n
        cols["src_file"] = [self.sf.rel] * n
        arrays = [text.take(pa.array(keep_idx)) if f.name == "text" else pa.array(cols[f.name], f.type)
                  for f in DOC_SCHEMA]
        self.ready.append(pa.RecordBatch.from_arrays(arrays, schema=DOC_SCHEMA))
        self.ready_docs += n

    def _seal(self):
        if self.cols["nemo_id"]:
            self.ready.append(pa.RecordBatch.from_pydict(self.cols, schema=DOC_SCHEMA))
            self.ready_docs += len(self.cols["nemo_id"])
            self.cols = {n: [] for n in DOC_SCHEMA.names}

    def take_batches(self) -> list[pa.RecordBatch]:
        self._seal()
        out, self.ready, self.ready_docs, self.text_bytes = self.ready, [], 0, 0
        return out

    def take_quarantine(self) -> pa.Table:
        return pa.Table.from_pydict(self.quarantine, schema=QUARANTINE_SCHEMA)


_MISSING = object()
