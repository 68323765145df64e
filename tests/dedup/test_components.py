"""Distributed connected components equal a union-find reference on hard graphs."""

from __future__ import annotations

import numpy as np
import pytest

from dedup.components import connected_components, write_edges
from dedup.shuffle import Step, hash_range


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


def run_cc(folder, u, v, parts, edge_parts=12, edge_maps=3):
    """Components of the graph (u, v): its edges written by `edge_maps` map tasks in `edge_parts`
    partitions, components on `parts` of them. Returns ({node: root}, stats)."""
    edges = Step(str(folder / "edges"), edge_maps, edge_parts)
    for i, chunk in enumerate(np.array_split(np.arange(len(u)), edge_maps)):
        write_edges(edges, i, u[chunk], v[chunk])
    stats = {}
    members = connected_components(edges, parts, folder, out_parts=2, stats=stats)
    split = [members.read(q) for q in range(members.parts)]
    for q, rows in enumerate(split):
        assert (hash_range(rows[:, 0], 2) == q).all(), "members are split by root"
    members.remove()
    assert not any(folder.iterdir()), "every step's folder is deleted once read"
    rows = np.concatenate(split)
    root, node = rows[:, 0], rows[:, 1]
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
def test_components_match_union_find(ray_instance, tmp_path, name, u, v, parts):
    got, stats = run_cc(tmp_path, u, v, parts)
    assert got == union_find_labels(u, v)
    assert stats["rounds"] >= 1 and stats["shuffle_bytes"] > 0
    # one task, one object and one file per partition and step: 2 steps per round, then the members
    assert [s["step"] for s in stats["steps"]][-1] == "members" and len(stats["steps"]) == 2 * stats["rounds"] + 1
    assert all(s["tasks"] == s["objects"] == s["files"] == parts for s in stats["steps"])


def test_result_is_independent_of_partitioning(ray_instance, tmp_path):
    rng = np.random.default_rng(1)
    u = rng.integers(0, 500, 600).astype(np.uint64)
    v = rng.integers(0, 500, 600).astype(np.uint64)
    a, _ = run_cc(tmp_path / "a", u, v, 2, edge_parts=2, edge_maps=1)
    b, _ = run_cc(tmp_path / "b", u[::-1].copy(), v[::-1].copy(), 5, edge_parts=15, edge_maps=4)
    assert a == b


def test_an_edge_split_the_components_cannot_read_is_refused(tmp_path):
    with pytest.raises(ValueError, match="must divide"):
        connected_components(Step(str(tmp_path), 1, 6), 4, tmp_path, 1)
