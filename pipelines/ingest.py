"""Ingest stage: one native input file -> one normalised parquet partition + its quarantine.

Runs inside a Ray task (one per file). Memory is bounded by `ingest.batch_docs` and
`MAX_BATCH_TEXT_BYTES`, never by the file size. Outputs are written to temporary names and renamed
only when complete, the stats file last, so a partition either exists whole or not at all.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import IngestConfig
from pipelines.outputs import PartitionWriter
from pipelines.readers import ArrowBatch, Bad, JsonRecord, read_json_lines, read_parquet
from pipelines.schema import DOC_SCHEMA, LIFTED, QUARANTINE_SCHEMA
from pipelines.sources import SourceFile, make_id

MAX_BATCH_TEXT_BYTES = 64 << 20  # flush a batch early when its text exceeds this (huge documents)

_TYPED = {"url": str, "native_id": str, "int_score": int, "edu_score": float, "dclm_fasttext_prob": float}


def _typed(value, tp):
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value if isinstance(value, tp) and not isinstance(value, bool) else None


def _nested_url(source: str, obj: dict) -> str | None:
    """URL hidden inside a nested native field (Dolma `metadata.url`, Zyda `source_other.url`)."""
    holder = obj.get("metadata") if source == "dolma-cc" else obj.get("source_other")
    if isinstance(holder, str):
        try:
            holder = orjson.loads(holder)
        except orjson.JSONDecodeError:
            return None
    url = holder.get("url") if isinstance(holder, dict) else None
    return url if isinstance(url, str) else None


class Normaliser:
    """Accumulates documents of one file as DOC_SCHEMA columns and quarantine records."""

    def __init__(self, sf: SourceFile, excerpt_chars: int):
        self.sf = sf
        self.excerpt_chars = excerpt_chars
        self.lifted = LIFTED[sf.source]
        self.quarantine: dict[str, list] = {n: [] for n in QUARANTINE_SCHEMA.names}
        self.reasons: dict[str, int] = {}

        self.cols: dict[str, list] = {n: [] for n in DOC_SCHEMA.names}
        self.ready: list[pa.RecordBatch] = []  # sealed batches, in row order
        self.ready_docs = 0
        self.text_bytes = 0

    def __len__(self):
        return len(self.cols["nemo_id"]) + self.ready_docs

    def bad(self, row: int | None, offset: int | None, reason: str, raw: bytes | str):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        q = self.quarantine
        q["source"].append(self.sf.source)
        q["src_file"].append(self.sf.rel)
        q["src_row"].append(row)
        q["byte_offset"].append(offset)
        q["reason"].append(reason)
        q["excerpt"].append(text[: self.excerpt_chars])
        key = reason.split(":", 1)[0]
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def _split(self, native: dict) -> tuple[dict, dict]:
        """(typed columns lifted out of the native fields, every other native field verbatim)."""
        lifted, rest = {}, {}
        for k, v in native.items():
            if k == "text":
                continue
            target = self.lifted.get(k)
            typed = _typed(v, _TYPED[target]) if target else None
            if typed is not None:
                lifted[target] = typed
            else:
                rest[k] = v
        if "url" not in lifted:
            lifted["url"] = _nested_url(self.sf.source, native)
        return lifted, rest

    def add_json(self, row: int, obj: dict, raw_len: int):
        text = obj.get("text", _MISSING)
        problem = ("missing_text: record has no 'text' field" if text is _MISSING
                   else "null_text: 'text' is null" if text is None
                   else f"text_not_string: 'text' is {type(text).__name__}" if not isinstance(text, str)
                   else "empty_text: 'text' is an empty string" if not text else None)
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

    def add_arrow(self, start_row: int, batch: pa.RecordBatch):
        """Columnar path for parquet: text stays in Arrow (no Python strings), only the small native
        columns go through Python. Pending JSON rows are sealed first so row order is kept."""
        text = batch.column("text")
        if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
            for i in range(batch.num_rows):
                self.bad(start_row + i, None, f"text_not_string: 'text' column is {text.type}",
                         str(text[i].as_py()))
            return
        text = text.cast(pa.string())
        valid = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False)
        others = [n for n in batch.schema.names if n != "text"]
        rows = batch.select(others).to_pylist() if others else [{}] * batch.num_rows
        keep_idx = []
        for i, ok in enumerate(valid.to_pylist()):
            if ok:
                keep_idx.append(i)
            else:
                self.bad(start_row + i, None, "empty_text: 'text' is an empty string" if text[i].is_valid
                         else "null_text: 'text' is null", orjson.dumps(rows[i], default=str))
        if not keep_idx:
            return
        self._seal()
        cols: dict[str, list] = {n: [] for n in DOC_SCHEMA.names if n != "text"}
        for i in keep_idx:
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


def ingest_file(sf: SourceFile, cfg: IngestConfig, out_root: Path, progress=None) -> dict:
    """Read one input file and write `ingest/<source>/<part>.parquet` (+ quarantine). Returns stats."""
    norm = Normaliser(sf, cfg.excerpt_chars)
    writer = PartitionWriter(out_root / "ingest" / sf.source / f"{sf.part_name}.parquet", DOC_SCHEMA)
    read = docs = chars = nbytes = 0
    since_report = 0

    def flush():
        nonlocal docs, chars
        for batch in norm.take_batches():
            docs += batch.num_rows
            chars += pc.sum(pc.utf8_length(batch.column("text"))).as_py() or 0
            writer.write(batch)

    if sf.fmt == "parquet":
        events = read_parquet(sf.url, cfg.batch_docs, cfg.max_docs_per_file)
    else:
        events = read_json_lines(sf.url, sf.fmt, cfg.max_docs_per_file)
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
            norm.bad(ev.row, ev.byte_offset, ev.reason, ev.raw)
            read += 1
            since_report += 1  # live counts are of records read, as the report's `in`
        if len(norm) >= cfg.batch_docs or norm.text_bytes >= MAX_BATCH_TEXT_BYTES:
            flush()
        if progress is not None and since_report >= cfg.batch_docs:
            progress.add.remote("ingest", since_report, nbytes)
            since_report, nbytes = 0, 0
    if len(norm):
        flush()
    if progress is not None and (since_report or nbytes):
        progress.add.remote("ingest", since_report, nbytes)
    quarantine = norm.take_quarantine()
    q_path = out_root / "quarantine" / f"{sf.source}__{sf.part_name}.parquet"
    writer.close(extra={q_path: quarantine} if quarantine.num_rows else {})
    n_quarantined = quarantine.num_rows
    return {"source": sf.source, "src_file": sf.rel, "read": read, "out": docs, "chars_out": chars,
            "removed": {}, "quarantined": n_quarantined, "quarantine_reasons": dict(sorted(norm.reasons.items()))}
