"""Connected components of the candidate-pair graph, distributed on Ray: alternating large-star /
small-star (Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014).

Nodes are 64-bit document keys; every step is a hash shuffle of edges into `P` partitions followed
by one vectorised NumPy pass per partition, so no process ever holds more than ~1/P of the edges
(plus the pieces it is sending). Per round, with E edges:
  large-star: for each node u, link every neighbour v > u to m(u) = min(u, neighbours of u);
  small-star: for each node u, link u and every neighbour v < u to min(u, those neighbours).
Each round moves O(E) edges (both directions of each edge in large-star, one in small-star) and the
edge count never grows; the graph converges to one star per component rooted at the component's
smallest key in O(log^2 n) rounds (O(log n) observed on real graphs; a chain of 2^k nodes takes
about k rounds). Convergence is detected locally and summed: a round changed nothing when no node
had both a smaller and a larger neighbour (large-star) and none had two smaller ones (small-star).

Output: `(node, root)` pairs for every node that has an edge, roots included as `(root, root)`.
"""

from __future__ import annotations

import numpy as np
import ray

_M1 = np.uint64(0xFF51AFD7ED558CCD)


def partition_of(keys: np.ndarray, parts: int) -> np.ndarray:
    """Stable hash partition of 64-bit keys (multiplicative hash; keys are not uniformly spread)."""
    with np.errstate(over="ignore"):
        return ((keys * _M1) >> np.uint64(40)) % np.uint64(parts)


def split_by(first: np.ndarray, second: np.ndarray, parts: int) -> list[np.ndarray]:
    """Pairs (first, second) as (n, 2) arrays, one per hash partition of `first`."""
    p = partition_of(first, parts)
    order = np.argsort(p, kind="stable")
    bounds = np.searchsorted(p[order], np.arange(parts + 1, dtype=np.uint64))
    pairs = np.stack([first[order], second[order]], axis=1)
    return [pairs[bounds[i]: bounds[i + 1]] for i in range(parts)]


def _grouped(pieces) -> tuple[np.ndarray, np.ndarray]:
    """Unique (node, neighbour) pairs sorted by node, then neighbour."""
    pairs = np.concatenate([p for p in pieces if len(p)]) if any(len(p) for p in pieces) \
        else np.zeros((0, 2), np.uint64)
    if not len(pairs):
        return pairs[:, 0], pairs[:, 1]
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    pairs = pairs[order]
    keep = np.ones(len(pairs), bool)
    keep[1:] = (pairs[1:, 0] != pairs[:-1, 0]) | (pairs[1:, 1] != pairs[:-1, 1])
    pairs = pairs[keep]
    return pairs[:, 0], pairs[:, 1]


def large_star(*pieces) -> tuple[np.ndarray, np.ndarray, int]:
    """Reduce side of large-star over (node, neighbour) pairs of one partition, both directions present.
    Returns new edges (v, m(u)) for neighbours v > u, and the number of nodes that changed something."""
    node, nbr = _grouped(pieces)
    if not len(node):
        return node, nbr, 0
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]])
    group_min = np.minimum(np.minimum.reduceat(nbr, starts), node[starts])
    counts = np.diff(np.r_[starts, len(node)])
    m = np.repeat(group_min, counts)
    larger = nbr > node
    changed_nodes = np.unique(node[larger & (m < node)])
    return nbr[larger], m[larger], int(len(changed_nodes))


def small_star(*pieces) -> tuple[np.ndarray, np.ndarray, int]:
    """Reduce side of small-star over (node, smaller neighbour) pairs of one partition.
    Returns edges (v, m) for v in {u} ∪ smaller neighbours, v != m, and the number of nodes with
    two or more smaller neighbours (what small-star changes)."""
    node, nbr = _grouped(pieces)
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


def _shuffle(edge_refs, parts: int, direction: str, options: dict):
    """Map side: each edge partition splits its pairs by hash of the key node."""
    @ray.remote(**options, num_returns=parts + 1)
    def mapper(edges):
        u, v = edges
        if direction == "both":
            pieces = split_by(np.concatenate([u, v]), np.concatenate([v, u]), parts)
        elif direction == "down":  # larger node keys the pair, smaller is the neighbour
            pieces = split_by(np.maximum(u, v), np.minimum(u, v), parts)
        else:  # "members": stars (leaf, root) plus (root, root), keyed by the first
            roots = np.unique(v)
            pieces = split_by(np.concatenate([u, roots]), np.concatenate([v, roots]), parts)
        return (*pieces, sum(p.nbytes for p in pieces))

    outs = [mapper.remote(ref) for ref in edge_refs]
    return [[o[i] for o in outs] for i in range(parts)], [o[parts] for o in outs]


def connected_components(edge_refs: list, parts: int, options: dict | None = None, max_rounds: int = 200,
                         stats: dict | None = None) -> list:
    """Refs of `parts` arrays of (node, root) pairs. `edge_refs` hold (u, v) array pairs; `options`: Ray task
    options of every step (default half a CPU)."""
    options = options or {"num_cpus": 0.5}

    @ray.remote(**options, num_returns=2)
    def large(*pieces):
        a, b, changed = large_star(*pieces)
        return (a, b), changed

    @ray.remote(**options, num_returns=2)
    def small(*pieces):
        a, b, changed = small_star(*pieces)
        return (a, b), changed

    stats = stats if stats is not None else {}
    stats.setdefault("rounds", 0)
    stats.setdefault("shuffle_bytes", 0)
    current = list(edge_refs)
    for _ in range(max_rounds):
        pieces, sizes = _shuffle(current, parts, "both", options)
        outs = [large.remote(*p) for p in pieces]
        current = [o[0] for o in outs]
        changed_large = sum(ray.get([o[1] for o in outs]))
        stats["shuffle_bytes"] += sum(ray.get(sizes))
        pieces, sizes = _shuffle(current, parts, "down", options)
        outs = [small.remote(*p) for p in pieces]
        current = [o[0] for o in outs]
        changed_small = sum(ray.get([o[1] for o in outs]))
        stats["shuffle_bytes"] += sum(ray.get(sizes))
        stats["rounds"] += 1
        if changed_large == 0 and changed_small == 0:
            break
    else:
        raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")

    @ray.remote(**options)
    def members(*pieces):
        return _grouped(pieces)

    pieces, sizes = _shuffle(current, parts, "members", options)
    stats["shuffle_bytes"] += sum(ray.get(sizes))
    return [members.remote(*p) for p in pieces]
