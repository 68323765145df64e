"""The one Arrow schema every source is normalised to, and the quarantine record schema.

Every stage after ingest reads and writes `DOC_SCHEMA`; source-specific fields that later stages
need are lifted into typed columns, everything else the source had is kept verbatim in the
`metadata` JSON column so that published shards can restore the source's own columns.

The text is written once. A stage that only removes documents and adds columns (every stage after
ingest) stores a *selection*: the `src_file` and `src_row` of each document it kept (a partition may
be a bundle of several files, discover.py) plus the columns it added, with the path of the full
documents it selects from in the file's metadata (`SELECTION_OF`, relative to the selection's
folder). `read_documents` resolves it; the run's intermediates are one compressed copy of the text
plus a few bytes per document per stage (issue 18: the 1.6x the text that a copy per stage wrote
becomes ~0.4x on the fixtures).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

DOC_SCHEMA = pa.schema([
    pa.field("nemo_id", pa.string(), nullable=False),     # stable, globally unique id (see sources.py)
    pa.field("source", pa.string(), nullable=False),      # dclm | fwe | zyda | dolma-cc
    pa.field("text", pa.string(), nullable=False),
    pa.field("src_file", pa.string(), nullable=False),    # path relative to the source folder
    pa.field("src_row", pa.int64(), nullable=False),      # 0-based record index inside src_file
    pa.field("url", pa.string()),
    pa.field("native_id", pa.string()),                   # FineWeb-Edu `id`, Dolma `id`; null elsewhere
    pa.field("int_score", pa.int64()),                    # FineWeb-Edu educational int_score
    pa.field("edu_score", pa.float64()),                  # FineWeb-Edu educational score
    pa.field("dclm_fasttext_prob", pa.float64()),         # DCLM's own fastText quality probability
    pa.field("metadata", pa.string(), nullable=False),    # JSON object: every other native field, verbatim
])

# After the quality stage: the classifier's label and P(High) for scored docs, null for the others.
QUALITY_SCHEMA = DOC_SCHEMA.append(pa.field("quality_pred", pa.string())).append(pa.field("quality_prob", pa.float64()))


def with_quality_columns(table: pa.Table, preds: list[str] | None = None, probs=None) -> pa.Table:
    """`table` in QUALITY_SCHEMA: the given predictions, or nulls for documents nobody scored."""
    n = table.num_rows
    table = table.select(DOC_SCHEMA.names)
    table = table.append_column(QUALITY_SCHEMA.field("quality_pred"),
                                pa.array(preds if preds is not None else [None] * n, pa.string()))
    return table.append_column(QUALITY_SCHEMA.field("quality_prob"),
                               pa.array(probs if probs is not None else [None] * n, pa.float64()))


QUARANTINE_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("src_file", pa.string(), nullable=False),
    pa.field("src_row", pa.int64()),        # record index when known
    pa.field("byte_offset", pa.int64()),    # offset in the decompressed stream when known
    pa.field("reason", pa.string(), nullable=False),
    pa.field("excerpt", pa.string(), nullable=False),  # first characters of the raw record (lossy-decoded)
    # for a record standing for the rest of a file: its on-disk bytes after the last byte decoded
    pa.field("unread_bytes", pa.int64()),
])


SELECTION_OF = b"zyda2.selection_of"  # parquet metadata key: the selected documents' file, relative


SELECTION_KEY = ["src_file", "src_row"]  # what a selection stores to name a document of its documents file


def selection(table: pa.Table, base: Path, dest: Path) -> pa.Table:
    """`table` (documents selected from the file `base`, in its row order, with any added columns)
    as the selection stored at `dest`: `src_file`, `src_row` + the columns that are not in DOC_SCHEMA
    (`src_file` is one dictionary-encoded value per input file of the partition: a few bytes)."""
    extra = [c for c in table.column_names if c not in DOC_SCHEMA.names]
    rel = os.path.relpath(base, Path(dest).parent)
    return table.select([*SELECTION_KEY, *extra]).replace_schema_metadata({SELECTION_OF: rel.encode()})


def row_keys(table: pa.Table, files: pa.Array) -> pa.Array:
    """A document's key within a partition: (index of its `src_file` in `files`) << 40 | `src_row`
    (unique: a bundle's files each count rows from 0; 2**40 rows per file)."""
    ordinal = pc.index_in(table.column("src_file"), value_set=files).cast(pa.uint64())
    return pc.bit_wise_or(pc.shift_left(ordinal, pa.scalar(40, pa.uint64())),
                          table.column("src_row").cast(pa.uint64()))


@dataclass(frozen=True)
class _Layout:
    """What one schema read (two for a selection) says about a documents file."""
    schema: pa.Schema
    base: Path | None         # the documents file a selection selects from; None: `path` holds them
    base_names: list[str]     # that file's columns

    @property
    def columns(self) -> list[str]:
        return [*self.base_names, *(n for n in self.schema.names if n not in self.base_names)]


def _layout(path: Path) -> _Layout:
    schema = pq.read_schema(path)
    meta = schema.metadata or {}
    if SELECTION_OF not in meta:
        return _Layout(schema, None, schema.names)
    base = Path(path).parent / meta[SELECTION_OF].decode()
    return _Layout(schema, base, pq.read_schema(base).names)


def documents_file(path: Path) -> Path:
    """The file holding the full documents of `path`: itself, or what the selection `path` selects from."""
    meta = pq.read_schema(path).metadata or {}
    return (Path(path).parent / meta[SELECTION_OF].decode()) if SELECTION_OF in meta else Path(path)


def document_columns(path: Path) -> list[str] | None:
    """The columns `read_documents(path)` returns, or None when `path` holds no documents (tokens)."""
    layout = _layout(path)
    return layout.columns if layout.base is not None or "text" in layout.base_names else None


def read_documents(path: Path, columns: list[str] | None = None, layout: _Layout | None = None) -> pa.Table:
    """The documents a stage left in `path` (DOC_SCHEMA plus the columns stages added), a selection
    resolved against its documents file (always full documents: `selection` is given the file a
    selection points into), in that file's row order; or just `columns` of them.

    Raises ValueError when a selection names a row its documents file does not have (the files of
    two different runs mixed), KeyError for an unknown column."""
    layout = layout or _layout(path)
    if layout.base is None:
        return pq.ParquetFile(path).read(columns=columns).replace_schema_metadata(None)
    base, base_names = layout.base, layout.base_names
    wanted = columns if columns is not None else layout.columns
    for name in wanted:
        if name not in base_names and name not in layout.schema.names:
            raise KeyError(f"{path}: no column {name!r}")
    added = [n for n in wanted if n not in base_names]
    picked = pq.ParquetFile(path).read(columns=[*SELECTION_KEY, *added])
    docs = pq.ParquetFile(base).read(columns=list(dict.fromkeys([*SELECTION_KEY, *(n for n in wanted
                                                                                   if n in base_names)])))
    files = pc.unique(docs.column("src_file").combine_chunks())
    rows = pc.index_in(row_keys(picked, files), row_keys(docs, files))
    if rows.null_count:
        raise ValueError(f"{path}: selects rows that {base} does not hold (files of different runs?)")
    docs = docs.take(rows)
    fields = [picked.schema.field(n) if n in added else docs.schema.field(n) for n in wanted]
    return pa.table([picked.column(n) if n in added else docs.column(n) for n in wanted], schema=pa.schema(fields))


def read_docs(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A stage's documents in QUALITY_SCHEMA (sources no classifier saw get null quality columns),
    or just `columns` of it."""
    layout = _layout(path)
    names = set(layout.columns)
    if "quality_pred" in names:
        return read_documents(path, columns, layout)
    if columns is None:
        return with_quality_columns(read_documents(path, layout=layout))
    table = read_documents(path, [c for c in columns if c in names], layout)  # only what is asked for
    for name in columns:
        if name not in names:
            field = QUALITY_SCHEMA.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(columns)


def read_folder(folder: Path, columns: list[str] | None = None) -> pa.Table:
    """Every partition's documents in a stage's source folder (`<run>/<stage>/<source>/`), in file
    name order: what a stage left for that source, selections resolved."""
    return pa.concat_tables([read_documents(p, columns) for p in sorted(Path(folder).glob("*.parquet"))])
