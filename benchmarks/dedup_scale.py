"""Banding + connected components at scale: >= 10 M generated signatures with planted clusters.

Signatures are generated inside the map tasks (a document is a deterministic function of its global
index g), so nothing of size N ever exists in one process. Planted structure, for N documents:
  giant   every doc with g % 100 == 0 shares band 0 with all the others: one cluster of N/100
  chains  docs with g % 100 == 1, in runs of CHAIN docs: neighbours share band 0 or band 1
          alternately, non-neighbours nothing: components that need many star rounds
  pairs   g % 100 in {2, 3}: the two share band 3;  triples  g % 100 in {4, 5, 6}: share band 4
  rest    random 32-bit slots: singletons
Every document's component is known in closed form; each output partition is checked against it.

  python -m benchmarks.dedup_scale [N]     # writes benchmarks/results/dedup_scale.json
"""

from __future__ import annotations

import sys
import time

import numpy as np
import ray

from benchmarks.common import peak_rss_mb, ray_workers_rss_mb, write_results
from dedup.components import connected_components
from dedup.lsh import bucket_edges, bucket_pairs

BANDS, ROWS, SEED = 8, 16, 10
PER_TASK = 250_000
CHAIN = 10_000
PARTS = 16


def _fill(values: np.ndarray, rows: int) -> np.ndarray:
    """A band's 16 slots derived from one 64-bit value per doc."""
    with np.errstate(over="ignore"):
        v = values.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15) + np.arange(rows, dtype=np.uint64)
        v ^= v >> np.uint64(29)
        v *= np.uint64(0xBF58476D1CE4E5B9)
        return (v >> np.uint64(32)).astype(np.uint32)


def make_signatures(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.arange(start, start + n, dtype=np.uint64)
    sigs = np.random.default_rng(start).integers(0, 2**32, (n, BANDS * ROWS), dtype=np.uint32)
    r = g % np.uint64(100)
    band = lambda b: slice(b * ROWS, (b + 1) * ROWS)  # noqa: E731
    giant = r == 0
    sigs[giant, band(0)] = _fill(np.full(giant.sum(), 1), ROWS)
    chain = r == 1
    k = (g[chain] // np.uint64(100)).astype(np.int64)
    cid, pos = k // CHAIN, k % CHAIN
    sigs[chain, band(0)] = _fill((cid << 32) | (pos // 2) | (1 << 60), ROWS)
    odd_link = np.where(pos >= 1, (cid << 32) | ((pos - 1) // 2) | (2 << 60), (g[chain].astype(np.int64) | (3 << 60)))
    sigs[chain, band(1)] = _fill(odd_link, ROWS)
    pair = (r == 2) | (r == 3)
    sigs[pair, band(3)] = _fill((g[pair] // np.uint64(100)) | np.uint64(4 << 60), ROWS)
    triple = (r >= 4) & (r <= 6)
    sigs[triple, band(4)] = _fill((g[triple] // np.uint64(100)) | np.uint64(5 << 60), ROWS)
    return g, sigs


def expected_root(g: np.ndarray, n_total: int) -> np.ndarray:
    """Smallest member of each document's planted component; -1 for singletons (not in any edge)."""
    r = g % 100
    k = g // 100
    root = np.full(len(g), -1, np.int64)
    root[r == 0] = 0
    cid = k // CHAIN
    first = cid * CHAIN * 100 + 1
    chain_len = np.minimum(CHAIN, (n_total - 1 - 1) // 100 + 1 - cid * CHAIN)
    chain = (r == 1) & (chain_len > 1)
    root[chain] = first[chain]
    root[(r == 2) | (r == 3)] = (k * 100 + 2)[(r == 2) | (r == 3)]
    tri = (r >= 4) & (r <= 6)
    root[tri] = (k * 100 + 4)[tri]
    return root


@ray.remote(num_cpus=0.5, num_returns=PARTS + 1)
def map_task(start: int, n: int):
    g, sigs = make_signatures(start, n)
    pieces = bucket_pairs(sigs, g, BANDS, ROWS, SEED, PARTS)
    return (*pieces, sum(p.nbytes for p in pieces))


@ray.remote(num_cpus=0.5, num_returns=2)
def reduce_task(*pieces):
    u, v, stats = bucket_edges(*pieces)
    return (u, v), stats


@ray.remote(num_cpus=0.5)
def check(members, n_total: int) -> tuple[int, int, int]:
    node, root = members
    node = node.astype(np.int64)
    exp = expected_root(node, n_total)
    wrong = int((exp != root.astype(np.int64)).sum())
    return len(node), wrong, int((exp == -1).sum())


def run(n_total: int) -> dict:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=6 * 2**30)
    try:
        t0 = time.perf_counter()
        maps = [map_task.remote(s, min(PER_TASK, n_total - s)) for s in range(0, n_total, PER_TASK)]
        reduces = [reduce_task.remote(*[m[p] for m in maps]) for p in range(PARTS)]
        edges = [r[0] for r in reduces]
        stats = ray.get([r[1] for r in reduces])
        band_shuffle = sum(ray.get([m[PARTS] for m in maps]))
        t_buckets = time.perf_counter() - t0
        cc = {}
        t1 = time.perf_counter()
        members = connected_components(edges, PARTS, stats=cc)
        checks = ray.get([check.remote(m, n_total) for m in members])
        t_cc = time.perf_counter() - t1
        nodes = sum(c[0] for c in checks)
        result = {
            "documents": n_total, "map_tasks": len(maps), "partitions": PARTS,
            "band_pairs": sum(s["pairs"] for s in stats), "candidate_edges": sum(s["edges"] for s in stats),
            "largest_bucket": max(s["largest_bucket"] for s in stats),
            "buckets_seconds": round(t_buckets, 1), "components_seconds": round(t_cc, 1),
            "total_seconds": round(t_buckets + t_cc, 1), "components_rounds": cc["rounds"],
            "shuffle_bytes_buckets": band_shuffle, "shuffle_bytes_components": cc["shuffle_bytes"],
            "nodes_in_components": nodes, "wrong_labels": sum(c[1] for c in checks),
            "unexpected_nodes": sum(c[2] for c in checks),
            "worker_peak_rss_mb": [round(x, 1) for x in ray_workers_rss_mb()[:4]],
            "driver_peak_rss_mb": round(peak_rss_mb(), 1),
        }
        result["docs_per_s"] = round(n_total / result["total_seconds"])
        return result
    finally:
        ray.shutdown()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    result = run(n)
    print(result)
    assert result["wrong_labels"] == 0 and result["unexpected_nodes"] == 0, "clusters are wrong"
    write_results("dedup_scale", result)


if __name__ == "__main__":
    main()
