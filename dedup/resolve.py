"""Cluster resolution: which documents of each near-duplicate cluster survive.

`cross` (Zyda-2): in a cluster spanning several sources keep every document of the best-ranked
source present and drop the others; a cluster inside one source is left alone (its makers already
deduplicated it). `all`: keep one document per cluster, the best-ranked source's smallest
`nemo_id`. Both depend only on cluster membership, so decisions do not depend on worker count,
partitioning or input order.
"""

from __future__ import annotations

import numpy as np

REASONS = ["single_source_cluster", "best_source", "cross_source_duplicate", "cluster_representative",
           "duplicate"]
KEEP = np.array([True, True, False, True, False])


def resolve(root: np.ndarray, doc: np.ndarray, file_rank: np.ndarray, mode: str,
            nemo_ids=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(doc, root, reason code, sizes-per-doc) sorted by (root, doc) for the clusters given.
    `nemo_ids(doc_keys) -> list[str]` is needed for mode `all` only."""
    order = np.lexsort((doc, root))
    root, doc = root[order], doc[order]
    n = len(doc)
    if not n:
        z = np.zeros(0, np.uint64)
        return z, z, np.zeros(0, np.int8), np.zeros(0, np.int64)
    rank = file_rank[(doc >> np.uint64(32)).astype(np.int64)]
    starts = np.flatnonzero(np.r_[True, root[1:] != root[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group = np.repeat(np.arange(len(starts)), sizes)
    best = np.minimum.reduceat(rank, starts)[group]
    if mode == "cross":
        # number of distinct sources per cluster: sort ranks inside each cluster and count changes
        by_rank = np.lexsort((rank, group))
        r_sorted, g_sorted = rank[by_rank], group[by_rank]
        new = np.r_[True, (r_sorted[1:] != r_sorted[:-1]) | (g_sorted[1:] != g_sorted[:-1])]
        n_sources = np.bincount(g_sorted[new], minlength=len(starts))[group]
        reason = np.where(n_sources == 1, 0, np.where(rank == best, 1, 2)).astype(np.int8)
    else:
        ids = np.array(nemo_ids(doc), dtype=object)
        reason = np.full(n, 4, np.int8)
        for _, (s, size) in enumerate(zip(starts, sizes)):
            members = range(s, s + size)
            keep = min(members, key=lambda i: (rank[i], ids[i]))
            reason[keep] = 3
    return doc, root, reason, np.repeat(sizes, sizes)


def cluster_stats(root: np.ndarray, doc: np.ndarray, file_source: np.ndarray, n_sources: int) -> dict:
    """Per source: clusters it appears in and the size of its largest; plus global histograms."""
    if not len(doc):
        return {"clusters": 0, "sizes": {}, "sources_per_cluster": {},
                "per_source": [[0, 0] for _ in range(n_sources)]}
    order = np.lexsort((doc, root))
    root, doc = root[order], doc[order]
    src = file_source[(doc >> np.uint64(32)).astype(np.int64)]
    starts = np.flatnonzero(np.r_[True, root[1:] != root[:-1]])
    sizes = np.diff(np.r_[starts, len(doc)])
    group = np.repeat(np.arange(len(starts)), sizes)
    combo = np.unique(group.astype(np.int64) * n_sources + src)
    g_of, s_of = combo // n_sources, combo % n_sources
    per_source = []
    for s in range(n_sources):
        mine = g_of[s_of == s]
        per_source.append([int(len(mine)), int(sizes[mine].max()) if len(mine) else 0])
    n_src = np.bincount(g_of, minlength=len(starts))
    return {"clusters": int(len(starts)),
            "sizes": {int(k): int(v) for k, v in zip(*np.unique(sizes, return_counts=True))},
            "sources_per_cluster": {int(k): int(v) for k, v in zip(*np.unique(n_src, return_counts=True))},
            "per_source": per_source}
