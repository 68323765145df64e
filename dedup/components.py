"""Connected components of the candidate-pair graph, distributed on Ray: alternating large-star /
small-star (Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014).

Nodes are 64-bit document keys; every step is a file shuffle (dedup/shuffle.py) of edges into `P`
partitions by a hash of the key node, and one vectorised NumPy pass per partition, so no process ever
holds more than ~1/P of the edges (plus its own output). Per round, with E edges:
  large-star: for each node u, link every neighbour v > u to m(u) = min(u, neighbours of u);
  small-star: for each node u, link u and every neighbour v < u to min(u, those neighbours).
Each round moves O(E) edges (both directions of each edge in large-star, one in small-star) and the
edge count never grows; the graph converges to one star per component rooted at the component's
smallest key in O(log^2 n) rounds (O(log n) observed on real graphs; a chain of 2^k nodes takes
about k rounds). Convergence is detected locally and summed: a round changed nothing when no node
had both a smaller and a larger neighbour (large-star) and none had two smaller ones (small-star).

Each reducer also does the next step's map: a large-star task writes its output split for
small-star, a small-star task its output in both directions for the next large-star. After the last
round every component is a star, so a node's root is min(node, its neighbours); the members step
reads the last small-star output (both directions), takes that minimum and writes (root, node)
split by root for the caller (resolution). Ray objects per step: one small stats dict per task.

The result does not depend on P or on the map tasks' order (each partition sorts what it reads);
`P` must divide the partition count of the input edges, which are read in ranges (shuffle.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import ray

from dedup.shuffle import Step, hash_range


def both_directions(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(2n, 2) pairs: every edge (u, v) as (u, v) and (v, u), keyed by the first column."""
    return np.stack([np.concatenate([u, v]), np.concatenate([v, u])], axis=1)


def write_edges(step: Step, i: int, u: np.ndarray, v: np.ndarray) -> int:
    """Map side of the first large-star step: map task `i`'s edges (u, v), both directions, split by
    `hash_range` of the key node into `step.parts` partitions. Returns the payload bytes."""
    pairs = both_directions(u, v)
    return step.write(i, pairs, hash_range(pairs[:, 0], step.parts))


def graph_partitions(edge_bytes: int, target_mb: float, parts: int) -> int:
    """Partitions for the components of a graph of `edge_bytes` bytes of edges (16 per edge, one
    direction): the smallest divisor of `parts` (the partitions the edges were written in, read in
    ranges) that holds at most `target_mb` MiB each; `parts` when none does."""
    need = max(1, -(-edge_bytes // max(1, int(target_mb * (1 << 20)))))
    return min(d for d in range(1, parts + 1) if parts % d == 0 and d >= min(need, parts))


def _grouped(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique (node, neighbour) pairs sorted by node, then neighbour."""
    if not len(pairs):
        return pairs[:, 0], pairs[:, 1]
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    pairs = pairs[order]
    keep = np.ones(len(pairs), bool)
    keep[1:] = (pairs[1:, 0] != pairs[:-1, 0]) | (pairs[1:, 1] != pairs[:-1, 1])
    pairs = pairs[keep]
    return pairs[:, 0], pairs[:, 1]


def large_star(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Reduce side of large-star over one partition's (node, neighbour) pairs, both directions present.
    Returns new edges (v, m(u)) for neighbours v > u, and the number of nodes that changed something."""
    node, nbr = _grouped(pairs)
    if not len(node):
        return node, nbr, 0
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    group_min = np.minimum(np.minimum.reduceat(nbr, starts), node[starts])
    counts = np.diff(np.r_[starts, len(node)])
    m = np.repeat(group_min, counts)
    larger = nbr > node
    changed_nodes = np.unique(node[larger & (m < node)])
    return nbr[larger], m[larger], int(len(changed_nodes))


def small_star(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Reduce side of small-star over one partition's (node, smaller neighbour) pairs.
    Returns edges (v, m) for v in {u} ∪ smaller neighbours, v != m, and the number of nodes with
    two or more smaller neighbours (what small-star changes)."""
    node, nbr = _grouped(pairs)
    if not len(node):
        return node, nbr, 0
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    group_min = np.minimum.reduceat(nbr, starts)  # neighbours are all < node here
    counts = np.diff(np.r_[starts, len(node)])
    m = np.repeat(group_min, counts)
    others = nbr != m
    first = np.concatenate([node[starts], nbr[others]])
    second = np.concatenate([group_min, m[others]])
    return first, second, int((counts > 1).sum())


def star_roots(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(node, root) of every node of one partition of converged stars, both directions present:
    a leaf's only neighbour is its root, a root's neighbours are all larger than itself."""
    node, nbr = _grouped(pairs)
    if not len(node):
        return node, nbr
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    return node[starts], np.minimum(np.minimum.reduceat(nbr, starts), node[starts])


def connected_components(edges: Step, parts: int, folder: Path | str, out_parts: int,
                         options: dict | None = None, max_rounds: int = 200, stats: dict | None = None) -> Step:
    """The members of every component, as a step of `parts` files holding (root, node) rows, roots
    included as (root, root), split by `hash_range(root, out_parts)`.

    `edges`: a step whose files hold candidate edges in both directions split by `hash_range` of the
    key node (`write_edges`); `parts` must divide `edges.parts`. Its folder is deleted once read, as is
    every intermediate step (created under `folder`). `options`: Ray task options of every step
    (default half a CPU). `stats` gets `rounds`, `shuffle_bytes` (the rows the star steps read, 16
    bytes each) and `steps`: per step its name, tasks, Ray objects, files, bytes written (rows; with
    headers: `file_bytes`) and seconds.
    Raises RuntimeError if the graph has not converged after `max_rounds` rounds."""
    if edges.parts % parts:
        raise ValueError(f"{parts} partitions must divide the edges' {edges.parts}")
    options = options or {"num_cpus": 0.5}
    stats = stats if stats is not None else {}
    stats.setdefault("rounds", 0)
    stats.setdefault("shuffle_bytes", 0)
    stats.setdefault("steps", [])
    folder = Path(folder)

    @ray.remote(**options)
    def large(src: Step, dst: Step, q: int) -> dict:
        k = src.parts // dst.parts
        pairs = src.read(q * k, (q + 1) * k)
        a, b, changed = large_star(pairs)
        down = np.stack([np.maximum(a, b), np.minimum(a, b)], axis=1)  # keyed by the larger node
        written = dst.write(q, down, hash_range(down[:, 0], dst.parts))
        return {"changed": changed, "read": int(pairs.nbytes), "bytes": written}

    @ray.remote(**options)
    def small(src: Step, dst: Step, q: int) -> dict:
        pairs = src.read(q)
        a, b, changed = small_star(pairs)
        return {"changed": changed, "read": int(pairs.nbytes), "bytes": write_edges(dst, q, a, b)}

    @ray.remote(**options)
    def members(src: Step, dst: Step, q: int) -> dict:
        node, root = star_roots(src.read(q))
        rows = np.stack([root, node], axis=1)
        return {"changed": 0, "read": 0, "bytes": dst.write(q, rows, hash_range(root, dst.parts))}

    def step(fn, src: Step, name: str, out: int) -> tuple[Step, int, int]:
        t0 = time.perf_counter()
        dst = Step(str(folder / name), parts, out)
        results = ray.get([fn.remote(src, dst, q) for q in range(parts)])
        src.remove()
        written = sum(r["bytes"] for r in results)
        stats["steps"].append({"step": name, "tasks": parts, "objects": parts, "files": parts, "bytes": written,
                               "file_bytes": written + parts * dst.header_bytes,
                               "seconds": round(time.perf_counter() - t0, 3)})
        return dst, sum(r["changed"] for r in results), sum(r["read"] for r in results)

    current = edges
    for r in range(1, max_rounds + 1):
        current, changed_large, read_large = step(large, current, f"large-{r:03d}", parts)
        current, changed_small, read_small = step(small, current, f"small-{r:03d}", parts)
        stats["shuffle_bytes"] += read_large + read_small
        stats["rounds"] += 1
        if changed_large == 0 and changed_small == 0:
            break
    else:
        raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
    return step(members, current, "members", out_parts)[0]
