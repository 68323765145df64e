"""The one Arrow schema every source is normalised to, and the quarantine record schema.

Every stage after ingest reads and writes `DOC_SCHEMA`; source-specific fields that later stages
need are lifted into typed columns, everything else the source had is kept verbatim in the
`metadata` JSON column so that published shards can restore the source's own columns.
"""

import pyarrow as pa

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
    table = table.append_column(QUALITY_SCHEMA.field("quality_pred"), pa.array(preds if preds is not None else [None] * n,
                                                                               pa.string()))
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
