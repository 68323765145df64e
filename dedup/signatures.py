"""Signature I/O: the per-partition MinHash signature files and the cache folder they live in.

`dedup/signatures/<tag>/<source>/<part>.parquet` holds `src_file`, `src_row` (a partition may be
a bundle of several files) and a fixed-size list of `num_hashes` uint32 (or uint64) minima per
document. The tag names everything a signature depends
on (shingling, n-gram size, hash count and width, seed) and nothing else, so a run with other bands
or rows reuses the cache (`zyda2.py dedup`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dedup.minhash import signatures
from pipelines.core.outputs import write_table
from pipelines.core.schema import read_documents


def signature_tag(cfg) -> str:
    """Folder name of a signature cache: everything signatures depend on, nothing else."""
    return f"{cfg.shingle}{cfg.ngram}_{cfg.num_hashes}h_{cfg.hash_bits}b_seed{cfg.seed}"


def write_signatures(docs_path: Path, out_path: Path, cfg) -> int:
    """Signatures of one partition's documents (`cfg`: the `dedup` section) to `out_path`; returns
    the number of documents."""
    table = read_documents(docs_path, ["text", "src_file", "src_row"])
    sigs = signatures(table.column("text"), cfg)
    flat = pa.array(sigs.ravel(), pa.uint32() if cfg.hash_bits == 32 else pa.uint64())
    write_table(out_path, pa.table({"src_file": table.column("src_file"), "src_row": table.column("src_row"),
                                    "signature": pa.FixedSizeListArray.from_arrays(flat, cfg.num_hashes)}))
    return table.num_rows


def read_signatures(path: Path) -> tuple[pa.ChunkedArray, np.ndarray, np.ndarray]:
    """(src_file, src_row, signatures [docs x num_hashes]) of one signature file."""
    table = pq.ParquetFile(path).read()
    col = table.column("signature").combine_chunks()
    width = col.type.list_size
    sigs = col.values.to_numpy(zero_copy_only=False).reshape(-1, width)
    return table.column("src_file"), table.column("src_row").to_numpy(), sigs
