"""Banding + connected components at scale: >= 10 M generated signatures with planted clusters,
through the dedup stage's own file shuffle (dedup/shuffle.py, lsh.py, components.py).

Signatures are generated inside the map tasks (a document is a deterministic function of its global
index g), so nothing of size N ever exists in one process. Planted structure, for N documents:
  giant   every doc with g % 100 == 0 shares band 0 with all the others: one cluster of N/100
  chains  docs with g % 100 == 1, in runs of CHAIN docs: neighbours share band 0 or band 1
          alternately, non-neighbours nothing: components that need many star rounds
  pairs   g % 100 in {2, 3}: the two share band 3;  triples  g % 100 in {4, 5, 6}: share band 4
  rest    random 32-bit slots: singletons
Every document's component is known in closed form; each members partition is checked against it.

Steps, as in the dedup stage: `bucket_map` (one task per map piece: its signatures, band keys, one
shuffle file), `buckets` (one task per partition: star edges, written both ways for components),
the star rounds (`large-NNN`, `small-NNN`) and `members` on the partitions the graph needs
(components.graph_partitions), then `check`. Reported per step: seconds, tasks, Ray objects,
files, bytes; peak RSS of the driver and of the largest Ray worker.

  python -m benchmarks.dedup_scale --docs 10000000 --maps 2000 --partitions 1024
  python -m benchmarks.dedup_scale --docs 2000000 --maps 400 --partitions 256 --candidate files_2M
  python -m benchmarks.dedup_scale --candidate object_store_2M --from OTHER/benchmarks/results/dedup_scale.json

writes benchmarks/results/dedup_scale.json (a `--candidate` run goes under its `candidates`; with
`--from`, another checkout's result file is recorded there instead of running, e.g. the object-store
shuffle before the file shuffle).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from benchmarks.common import RESULTS, machine, peak_rss_mb, ray_workers_rss_mb, write_results
from dedup.components import connected_components, graph_partitions, write_edges
from dedup.lsh import bucket_edges, bucket_pairs, write_buckets
from dedup.shuffle import Step
from pipelines.core.sections import DedupConfig

BANDS, ROWS, SEED = 8, 16, 10
CHAIN = 10_000


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


def expected_nodes(n_total: int, chunk: int = 1_000_000) -> int:
    """Documents that belong in a component of two or more (N a multiple of 100: no cut pair or triple)."""
    return sum(int((expected_root(np.arange(s, min(s + chunk, n_total), dtype=np.int64), n_total) >= 0).sum())
               for s in range(0, n_total, chunk))


@ray.remote(num_cpus=0.5)
def bucket_map(step: Step, i: int, start: int, n: int) -> int:
    g, sigs = make_signatures(start, n)
    return write_buckets(step, i, bucket_pairs(sigs, g, BANDS, ROWS, SEED))


@ray.remote(num_cpus=0.5)
def bucket_reduce(src: Step, dst: Step, p: int) -> dict:
    u, v, stats = bucket_edges(src.read(p))
    stats["bytes"] = write_edges(dst, p, u, v)
    return stats


@ray.remote(num_cpus=0.5)
def check(members: Step, q: int, n_total: int) -> tuple[int, int, int]:
    rows = members.read(q)
    root, node = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
    exp = expected_root(node, n_total)
    return len(node), int((exp != root).sum()), int((exp == -1).sum())


def _step(name: str, t0: float, tasks: int, files: int, written: int, header: int) -> dict:
    return {"step": name, "tasks": tasks, "objects": tasks, "files": files, "bytes": written,
            "file_bytes": written + files * header, "seconds": round(time.perf_counter() - t0, 3)}


def run(n_total: int, maps: int, parts: int, graph_mb: float, folder: Path) -> dict:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=2**30)
    root = Path(tempfile.mkdtemp(prefix="dedup_scale-", dir=folder))
    try:
        per_map = -(-n_total // maps)
        pieces = [(s, min(per_map, n_total - s)) for s in range(0, n_total, per_map)]
        buckets = Step(str(root / "buckets"), len(pieces), parts)
        edges = Step(str(root / "edges"), parts, parts)
        steps = []
        t0 = time.perf_counter()
        written = sum(ray.get([bucket_map.remote(buckets, i, s, n) for i, (s, n) in enumerate(pieces)]))
        steps.append(_step("bucket_map", t0, len(pieces), len(pieces), written, buckets.header_bytes))
        t1 = time.perf_counter()
        stats = ray.get([bucket_reduce.remote(buckets, edges, p) for p in range(parts)])
        buckets.remove()
        steps.append(_step("buckets", t1, parts, parts, sum(s["bytes"] for s in stats), edges.header_bytes))
        t_buckets = time.perf_counter() - t0
        candidate_edges = sum(s["edges"] for s in stats)
        graph_parts = graph_partitions(16 * candidate_edges, graph_mb, parts)
        cc = {}
        t2 = time.perf_counter()
        members = connected_components(edges, graph_parts, root, graph_parts, stats=cc)
        steps += cc["steps"]
        t3 = time.perf_counter()
        checks = ray.get([check.remote(members, q, n_total) for q in range(graph_parts)])
        members.remove()
        steps.append(_step("check", t3, graph_parts, 0, 0, 0))
        t_cc = time.perf_counter() - t2
        workers = ray_workers_rss_mb(own=True)
        result = {
            "documents": n_total, "map_tasks": len(pieces), "partitions": parts,
            "graph_partition_mb": graph_mb, "graph_partitions": graph_parts,
            "band_pairs": sum(s["pairs"] for s in stats), "candidate_edges": candidate_edges,
            "largest_bucket": max(s["largest_bucket"] for s in stats),
            "buckets_seconds": round(t_buckets, 1), "components_seconds": round(t_cc, 1),
            "total_seconds": round(t_buckets + t_cc, 1), "components_rounds": cc["rounds"],
            "shuffle_bytes_buckets": steps[0]["bytes"],
            "shuffle_bytes_components": sum(s["bytes"] for s in steps[1:]),
            "file_bytes": sum(s["file_bytes"] for s in steps), "files": sum(s["files"] for s in steps),
            "ray_objects": sum(s["objects"] for s in steps),
            "ray_objects_largest_step": max(s["objects"] for s in steps),
            "nodes_in_components": sum(c[0] for c in checks), "wrong_labels": sum(c[1] for c in checks),
            "unexpected_nodes": sum(c[2] for c in checks),
            "worker_peak_rss_mb": round(workers[0], 1) if workers else None,
            "driver_peak_rss_mb": round(peak_rss_mb(), 1),
            "steps": steps,
        }
        result["all_clusters_correct"] = result["wrong_labels"] == 0 and result["unexpected_nodes"] == 0 \
            and result["nodes_in_components"] == expected_nodes(n_total)
        result["docs_per_s"] = round(n_total / result["total_seconds"])
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
        ray.shutdown()


def object_store_objects(maps: int, parts: int, rounds: int) -> dict:
    """Ray objects the object-store shuffle (before dedup/shuffle.py) made at this size, from its task
    signatures: a bucket map returned parts + 1 objects, a reduce 2; every components step ran `parts`
    mappers of parts + 1 returns and `parts` reducers of 2 (members: 1); the check one per partition."""
    step = parts * (parts + 1) + 2 * parts
    steps = {"bucket_map": maps * (parts + 1), "buckets": 2 * parts, "large-NNN": step, "small-NNN": step,
             "members": parts * (parts + 1) + parts, "check": parts}
    total = steps["bucket_map"] + steps["buckets"] + 2 * rounds * step + steps["members"] + steps["check"]
    return {"ray_objects_per_step": steps, "ray_objects": total, "ray_objects_largest_step": max(steps.values())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dedup_scale", description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=10_000_000)
    ap.add_argument("--maps", type=int, default=2_000, help="map pieces (bucket_map tasks)")
    ap.add_argument("--partitions", type=int, default=1_024, help="dedup.partitions: the band-key shuffle's")
    ap.add_argument("--graph-mb", type=float, default=DedupConfig.graph_partition_mb,
                    help="dedup.graph_partition_mb: MiB of candidate edges per components partition")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where the shuffle files go")
    ap.add_argument("--candidate", help="record this run (or --from's) under `candidates` with this name")
    ap.add_argument("--from", dest="source", type=Path, help="with --candidate: a result file to record, no run")
    args = ap.parse_args(argv)
    if args.source:
        if not args.candidate:
            ap.error("--from needs --candidate")
        result = json.loads(args.source.read_text())
        if "ray_objects" not in result:  # a result of the object-store shuffle, which did not count them
            result.update(object_store_objects(result["map_tasks"], result["partitions"], result["components_rounds"]))
    else:
        result = run(args.docs, args.maps, args.partitions, args.graph_mb, args.dir)
        print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=1))
        if not result["all_clusters_correct"]:
            raise SystemExit("clusters are wrong")
        result = {"machine": machine(), **result}
    path = RESULTS / "dedup_scale.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    if args.candidate:
        write_results("dedup_scale", {**{k: v for k, v in old.items() if k != "machine"},
                                      "candidates": {**old.get("candidates", {}), args.candidate: result}})
    else:
        write_results("dedup_scale", {**{k: v for k, v in result.items() if k != "machine"},
                                      "candidates": old.get("candidates", {})})


if __name__ == "__main__":
    main()
