"""The tokenize stage: Mistral v0.1 ids of every kept document, with its split and anneal membership.

One task per partition: the ids (+EOS, optional BOS), the document's split (`val` when a hash of its
split key falls under `shards.validation_fraction`, else `train`) and whether it belongs to the
anneal set. The split key is the document's dedup cluster root when it is in a cluster, else its
text, so identical texts and near-duplicates always land on the same side.
-> tokenize/<source>/<part>.parquet (TOKEN_SCHEMA)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.counts import Counts
from pipelines.core.outputs import write_table
from pipelines.core.schema import read_docs
from pipelines.core.stage import Partition, PartitionStage, StageOutput
from pipelines.tokens.encoder import cached_encoder

TOKEN_SCHEMA = pa.schema([
    pa.field("nemo_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),   # train | val
    pa.field("anneal", pa.bool_(), nullable=False),   # in the anneal set (train documents only)
    pa.field("tokens", pa.large_list(pa.uint16()), nullable=False),
])


def is_validation(key: str, fraction: float) -> bool:
    """Stable, partition-independent choice: the first 8 bytes of sha1(key) as a fraction."""
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return h < fraction * 2**64


def split_keys(nemo_ids: list[str], texts: list[str], decisions: Path | None) -> list[str]:
    """What decides each document's split: `cluster:<root nemo_id>` for a member of a dedup cluster
    (from `decisions`, the partition's dedup/decisions file, if any), else `text:<text>`.

    Identical texts have identical MinHash signatures, so they are either all in one cluster or all
    unclustered: both rules send them to the same side, and so are all members of one cluster."""
    clusters: dict[str, str] = {}
    if decisions is not None and decisions.is_file():
        t = pq.read_table(decisions, columns=["nemo_id", "cluster_id"])
        clusters = dict(zip(t.column("nemo_id").to_pylist(), t.column("cluster_id").to_pylist()))
    return [f"cluster:{clusters[i]}" if i in clusters else f"text:{text}" for i, text in zip(nemo_ids, texts)]


def tokenize_table(docs: Path, source: str, tcfg, scfg, decisions: Path | None = None) -> tuple[pa.Table, dict]:
    """One partition's documents as TOKEN_SCHEMA rows, and their counts (marker stats).
    `decisions`: the partition's dedup decisions (cluster roots), which the split follows."""
    table = read_docs(docs, ["nemo_id", "text", "int_score", "quality_prob"])
    texts = table.column("text").to_pylist()
    ids, offsets = cached_encoder(tcfg.cache_units).encode_flat(texts, tcfg.add_bos, tcfg.append_eos)
    nemo_ids = table.column("nemo_id").to_pylist()
    split = np.array(["val" if is_validation(k, scfg.validation_fraction) else "train"
                      for k in split_keys(nemo_ids, texts, decisions)], dtype=object)
    val = split == "val"
    anneal = anneal_mask(table, source, scfg) & ~val
    lengths = np.diff(offsets)
    tokens = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(ids.astype(np.uint16), pa.uint16()))
    out = pa.table({"nemo_id": nemo_ids, "split": split.tolist(), "anneal": anneal, "tokens": tokens},
                   schema=TOKEN_SCHEMA)
    return out, {"source": source, "read": table.num_rows, "out": table.num_rows, "removed": {}, "quarantined": 0,
                 "chars_out": 0, "tokens": int(lengths.sum()),
                 "tokens_val": int(lengths[val].sum()), "tokens_anneal": int(lengths[anneal].sum()),
                 "docs_val": int(val.sum())}


def tokenize_partition(docs: Path, dest: Path, source: str, tcfg, scfg, decisions: Path | None = None) -> dict:
    """`tokenize_table` written to `dest` (outside a run: benchmarks); returns its counts."""
    table, stats = tokenize_table(docs, source, tcfg, scfg, decisions)
    write_table(dest, table)
    return stats


def anneal_mask(table: pa.Table, source: str, cfg) -> np.ndarray:
    n = table.num_rows
    if source not in cfg.anneal_components:
        return np.zeros(n, bool)
    if source == "fwe":
        scores = table.column("int_score").to_numpy(zero_copy_only=False)
        return np.nan_to_num(scores.astype(float), nan=-1) >= cfg.anneal_fwe_min_int_score
    prob = table.column("quality_prob").to_numpy(zero_copy_only=False).astype(float)
    return np.nan_to_num(prob, nan=-1) >= cfg.anneal_min_quality_prob


class TokenizeStage(PartitionStage):
    """Mistral v0.1 ids of every kept document, its split and anneal membership (module docstring)."""
    name = "tokenize"
    needs = ("shards",)  # the split and the anneal set follow shards.validation_fraction and anneal_*
    writes_docs = False  # its output is tokens: later stages read documents from where they were

    def process(self, part: Partition, cfg) -> StageOutput:
        table, stats = tokenize_table(part.docs, part.source, cfg.tokenize, cfg.shards,
                                      part.table_path("dedup/decisions"))
        counts = Counts.from_partition_dict({"src_file": part.file.rel, **stats})
        return StageOutput(table, counts, progress_bytes=stats["tokens"] * 2)

    def summarize(self, ex, counts, by_source, upstream) -> None:
        for source, c in by_source.items():  # tokenizing keeps every document and its characters
            c.chars_out = upstream[source].chars_out
