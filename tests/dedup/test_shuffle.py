"""The file shuffle (dedup/shuffle.py): what reducers read is exactly what the maps wrote, in map order."""

from __future__ import annotations

import numpy as np
import pytest

from dedup.shuffle import MAGIC, ShuffleError, Step, hash_mod, hash_range


def _maps(rng, maps: int, parts: int, width: int = 2, rows: int = 300):
    """Each map's rows and their partitions; some maps empty, partition 1 never used."""
    out = []
    for i in range(maps):
        n = 0 if i == 1 else int(rng.integers(1, rows))
        data = rng.integers(0, 2**64, (n, width), dtype=np.uint64)
        part = rng.choice([p for p in range(parts) if p != 1], n)
        out.append((data, part))
    return out


def test_round_trip_in_map_order_with_empty_partitions(tmp_path):
    rng = np.random.default_rng(0)
    step = Step(str(tmp_path / "s"), 4, 5, width=3)
    maps = _maps(rng, 4, 5, width=3)
    written = [step.write(i, data, part) for i, (data, part) in enumerate(maps)]
    assert written == [data.nbytes for data, _ in maps]
    for p in range(5):
        expected = np.concatenate([data[part == p] for data, part in maps])  # map order, then the map's order
        got = step.read(p)
        assert got.dtype == np.uint64 and got.shape == (len(expected), 3)
        assert np.array_equal(got, expected)
    assert step.read(1).shape == (0, 3)
    ranged = np.concatenate([np.concatenate([data[part == 2], data[part == 3]]) for data, part in maps])
    assert np.array_equal(step.read(2, 4), ranged)  # a range of partitions: map by map, partition by partition
    assert np.array_equal(step.read(0, 5), np.concatenate([d[np.argsort(p, kind="stable")] for d, p in maps]))


def test_the_order_maps_finish_in_does_not_matter(tmp_path):
    rng = np.random.default_rng(1)
    maps = _maps(rng, 6, 4)
    a, b = Step(str(tmp_path / "a"), 6, 4), Step(str(tmp_path / "b"), 6, 4)
    for i in range(6):
        a.write(i, *maps[i])
    for i in reversed(range(6)):
        b.write(i, *maps[i])
    for p in range(4):
        assert np.array_equal(a.read(p), b.read(p))
    assert a.path(0).read_bytes() == b.path(0).read_bytes()


def test_file_layout_is_the_documented_one(tmp_path):
    step = Step(str(tmp_path), 1, 3)
    rows = np.array([[5, 50], [6, 60], [7, 70]], np.uint64)
    step.write(0, rows, np.array([2, 0, 2]))
    raw = step.path(0).read_bytes()
    assert raw[:8] == MAGIC
    words = np.frombuffer(raw[8:], "<u8")
    assert list(words[:2]) == [3, 2]  # parts, width
    assert list(words[2:6]) == [0, 1, 1, 3]  # offsets: partition 0 = row 0, 1 empty, 2 = rows 1-2
    assert list(words[6:]) == [6, 60, 5, 50, 7, 70]


def test_a_retried_map_replaces_its_file_and_leaves_no_temp(tmp_path):
    step = Step(str(tmp_path), 1, 2)
    step.write(0, np.ones((10, 2), np.uint64), np.zeros(10, int))
    step.write(0, np.full((2, 2), 7, np.uint64), np.ones(2, int))
    assert step.read(0).shape == (0, 2) and (step.read(1) == 7).all()
    assert [p.name for p in tmp_path.iterdir()] == ["000000.shf"]
    step.remove()
    assert not tmp_path.exists()


def test_unreadable_files_name_themselves(tmp_path):
    step = Step(str(tmp_path), 2, 2)
    step.write(0, np.ones((4, 2), np.uint64), np.array([0, 1, 1, 1]))
    with pytest.raises(ShuffleError, match="000001.shf is missing"):
        step.read(0)
    with pytest.raises(ShuffleError, match="holds 2 partitions of width 2, expected 2 of width 3"):
        Step(str(tmp_path), 1, 2, width=3).read(0)
    raw = step.path(0).read_bytes()
    step.path(0).write_bytes(raw[:-8])
    with pytest.raises(ShuffleError, match="shorter than its header says"):
        Step(str(tmp_path), 1, 2).read(1)
    step.path(0).write_bytes(b"not a shuffle file at all")
    with pytest.raises(ShuffleError, match="bad header"):
        Step(str(tmp_path), 1, 2).read(0)
    with pytest.raises(ValueError, match="partition numbers must be in"):
        step.write(0, np.ones((1, 2), np.uint64), np.array([2]))


def test_partitions_of_a_divisor_are_ranges():
    keys = np.random.default_rng(2).integers(0, 2**64, 100_000, dtype=np.uint64)
    fine = hash_range(keys, 12)
    assert fine.min() == 0 and fine.max() == 11
    for coarse in (1, 2, 3, 4, 6, 12):
        assert np.array_equal(hash_range(keys, coarse), fine // (12 // coarse))
    sizes = np.bincount(hash_range(np.arange(120_000, dtype=np.uint64), 12))  # sequential keys spread too
    assert sizes.min() > 0.9 * sizes.mean()
    assert np.array_equal(hash_mod(keys, 7), hash_mod(keys, 7).astype(np.uint64)) and hash_mod(keys, 7).max() == 6
