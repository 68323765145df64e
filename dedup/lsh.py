"""LSH banding and the bucket shuffle: signatures -> candidate edges.

Each document's signature is cut into `bands` bands of `rows` slots; a band is hashed to one 64-bit
key (`minhash.band_keys`, the band index mixed in). Map side: every (band key, doc) pair goes to
the partition `hash(key) % P` (`write_buckets`: one shuffle file per map task, dedup/shuffle.py).
Reduce side: pairs are sorted by key; every group of two or more documents sharing a key is a
bucket and yields star edges (doc, smallest doc of the bucket), so a bucket of k documents costs
k-1 edges, not k(k-1)/2. Memory per reduce task: its 1/P of the N x bands pairs (16 bytes each).

Document keys are `file_index << 32 | src_row`, `file_index` the input file's index among every input
file of the run (a bundle's files each have theirs): unique, ordered like the input files, and they
turn back into a `nemo_id` without a lookup table of documents.
"""

from __future__ import annotations

import numpy as np

from dedup.minhash import band_keys
from dedup.shuffle import Step, hash_mod


def doc_keys(file_index: int | np.ndarray, src_rows: np.ndarray) -> np.ndarray:
    """Keys of documents `src_rows` of input file(s) `file_index` (one, or one per document)."""
    return (np.asarray(file_index).astype(np.uint64) << np.uint64(32)) | src_rows.astype(np.uint64)


def bucket_pairs(sigs: np.ndarray, keys: np.ndarray, bands: int, rows: int, seed: int) -> np.ndarray:
    """Map side: the (band key, doc key) pairs of documents `keys` with signatures `sigs`, (n x bands, 2)."""
    if not len(keys):
        return np.zeros((0, 2), np.uint64)
    bk = band_keys(sigs, bands, rows, seed)
    return np.stack([bk.ravel(), np.repeat(keys, bands)], axis=1)


def write_buckets(step: Step, i: int, pairs: np.ndarray) -> int:
    """Map task `i`'s (band key, doc key) pairs as its shuffle file, split by `hash_mod` of the band key
    (the partitioning is part of the result: `edges` counts a pair once per partition sharing it)."""
    return step.write(i, pairs, hash_mod(pairs[:, 0], step.parts))


def bucket_edges(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Reduce side: star edges (doc, bucket minimum) of every bucket with two or more documents, from
    one partition's (band key, doc key) pairs."""
    stats = {"pairs": len(pairs), "buckets_ge2": 0, "largest_bucket": 0, "edges": 0}
    if not len(pairs):
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), stats
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    key, doc = pairs[order, 0], pairs[order, 1]
    first = np.r_[True, key[1:] != key[:-1]]
    starts = np.flatnonzero(first)
    sizes = np.diff(np.r_[starts, len(key)])
    head = np.repeat(doc[starts], sizes)
    member = ~first & (doc != head)
    u, v = doc[member], head[member]
    if len(u):  # the same pair often shares several bands
        uv = np.unique(np.stack([u, v], axis=1), axis=0)
        u, v = uv[:, 0], uv[:, 1]
    stats["buckets_ge2"] = int((sizes > 1).sum())
    stats["largest_bucket"] = int(sizes.max())
    stats["edges"] = int(len(u))
    return u, v, stats
