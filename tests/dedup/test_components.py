"""Distributed connected components equal a union-find reference on hard graphs."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from dedup.components import connected_components


def union_find_labels(u: np.ndarray, v: np.ndarray) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(u.tolist(), v.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


def run_cc(u, v, parts, edge_parts=3):
    chunks = np.array_split(np.arange(len(u)), edge_parts)
    refs = [ray.put((u[c], v[c])) for c in chunks]
    stats = {}
    outs = ray.get(connected_components(refs, parts, stats=stats))
    node = np.concatenate([o[0] for o in outs])
    root = np.concatenate([o[1] for o in outs])
    assert len(np.unique(node)) == len(node), "every node exactly once"
    return dict(zip(node.tolist(), root.tolist())), stats


def graphs():
    rng = np.random.default_rng(0)
    chain = np.arange(1, 2000, dtype=np.uint64)
    yield "long chain in shuffled order", *(lambda p: (chain[p], chain[p] + 1))(rng.permutation(len(chain)))
    star = np.full(500, 7, np.uint64)
    yield "giant star with big centre", np.arange(1000, 1500, dtype=np.uint64), star
    u = rng.integers(0, 3000, 4000).astype(np.uint64)
    v = rng.integers(0, 3000, 4000).astype(np.uint64)
    yield "random sparse graph with self loops", u, v
    big = np.array([2**63 + 5, 2**64 - 1, 3], np.uint64)
    yield "keys at the top of uint64", big, np.array([3, 2**63 + 5, 2**64 - 1], np.uint64)


@pytest.mark.parametrize("parts", [1, 4])
@pytest.mark.parametrize("name, u, v", list(graphs()), ids=[g[0] for g in graphs()])
def test_components_match_union_find(ray_instance, name, u, v, parts):
    got, stats = run_cc(u, v, parts)
    assert got == union_find_labels(u, v)
    assert stats["rounds"] >= 1 and stats["shuffle_bytes"] > 0


def test_result_is_independent_of_partitioning(ray_instance):
    rng = np.random.default_rng(1)
    u = rng.integers(0, 500, 600).astype(np.uint64)
    v = rng.integers(0, 500, 600).astype(np.uint64)
    a, _ = run_cc(u, v, 2, edge_parts=1)
    b, _ = run_cc(u[::-1].copy(), v[::-1].copy(), 5, edge_parts=4)
    assert a == b
