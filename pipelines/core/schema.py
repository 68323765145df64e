"""The one Arrow schema every source is normalised to, and the quarantine record schema.

Every stage after ingest reads and writes `DOC_SCHEMA`; source-specific fields that later stages
need are lifted into typed columns, everything else the source had is kept verbatim in the
`metadata` JSON column so that published shards can restore the source's own columns.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
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


def read_docs(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A stage's documents in QUALITY_SCHEMA (sources no classifier saw get null quality columns),
    or just `columns` of it."""
    names = pq.read_schema(path).names
    if "quality_pred" in names:
        return pq.read_table(path, columns=columns)
    if columns is None:
        return with_quality_columns(pq.read_table(path))
    table = pq.read_table(path, columns=[c for c in columns if c in names])  # only what is asked for
    for name in columns:
        if name not in names:
            field = QUALITY_SCHEMA.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(columns)
