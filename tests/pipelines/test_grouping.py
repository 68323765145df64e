"""Grouped inputs (pipelines/core/grouping.py): many partitions per Ray task, and not one output byte
moved by it. The rule itself (sizes, caps, host groups, order), then whole runs on the fixtures with
every file alone and with every stage's files in one task, and a grouped run killed and resumed."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

from pipelines.core.grouping import group_target, task_groups
from pipelines.core.sources import SourceFile
from pipelines.core.stage import grouped, write_marker
from tests.conftest import files_digest, run_local

MB = 1 << 20
ALONE = ["ray.task_group_mb=0.000001"]  # every file its own task
ONE_TASK = ["ray.task_group_mb=100000", "ray.task_group_waves=0"]  # a stage's files in one task


def test_groups_keep_file_order_and_fill_up_to_the_target():
    assert task_groups([1, 1, 1, 1, 1], 3, 64) == [[0, 1, 2], [3, 4]]
    assert task_groups([2, 2, 2], 4, 64) == [[0, 1], [2]]  # exactly the target fits
    assert task_groups([], 3, 64) == []
    groups = task_groups([0.3, 0.2, 0.9, 0.1, 0.5, 0.4, 0.6], 1.0, 64)
    assert [i for g in groups for i in g] == list(range(7))  # every file once, in order


def test_a_file_larger_than_the_target_is_a_group_of_its_own():
    assert task_groups([1, 10, 1, 1], 3, 64) == [[0], [1], [2, 3]]
    assert task_groups([10, 10], 3, 64) == [[0], [1]]


def test_the_file_cap_bounds_groups_of_small_or_remote_files():
    assert task_groups([1.0] * 7, float("inf"), 3) == [[0, 1, 2], [3, 4, 5], [6]]  # remote: 1 byte each
    assert task_groups([1] * 4, 100, 1) == [[0], [1], [2], [3]]
    with pytest.raises(ValueError):
        task_groups([1], 1, 0)


def test_a_group_never_mixes_keys_and_groups_come_in_order_of_their_first_file():
    keys = ["a", "b", "a", "b", "a", None, None]
    groups = task_groups([1] * 7, 2, 64, keys)
    assert groups == [[0, 2], [1, 3], [4], [5, 6]]
    assert all(len({keys[i] for i in g}) == 1 for g in groups)


def test_the_target_is_lowered_so_every_slot_gets_several_groups():
    sizes = [MB] * 64
    assert group_target(sizes, 256, 0, 4) == 256 * MB  # no floor
    assert group_target(sizes, 256, 4, 4) == 64 * MB / 16
    assert len(task_groups(sizes, group_target(sizes, 256, 4, 4), 64)) == 16
    assert group_target(sizes, 2, 4, 1) == 2 * MB  # the configured target when it is already smaller
    assert group_target([], 256, 4, 4) == 256 * MB


def test_a_retried_group_skips_the_files_it_already_finished(tmp_path):
    files = [SourceFile("zyda", f"/in/{n}.parquet", f"{n}.parquet", "parquet", "zyda", i)
             for i, n in enumerate("abc")]
    write_marker(tmp_path, "step", "h1", files[0], {"source": "zyda", "read": 5}, 0.1)
    write_marker(tmp_path, "step", "h0", files[1], {"source": "zyda", "read": 6}, 0.1)  # another config
    calls = []

    def fn(sf):
        calls.append(sf.rel)
        return {"source": sf.source, "read": 1}
    assert grouped(tmp_path, "step", "h1", fn)(files) == [{"source": "zyda", "read": 5}, {"source": "zyda", "read": 1},
                                                         {"source": "zyda", "read": 1}]
    assert calls == ["b.parquet", "c.parquet"]
    log = (tmp_path / "logs" / "step" / "zyda__c.parquet.log").read_text()  # per-file logs and markers
    assert "start /in/c.parquet" in log and "done in" in log
    assert json.loads((tmp_path / "step" / "_done" / "zyda__b.parquet.json").read_text())["config_hash"] == "h1"


def _pids(run, step: str) -> set[str]:
    return {re.search(r" pid (\d+) start", p.read_text()).group(1) for p in (run / "logs" / step).glob("*.log")}


def test_grouping_moves_no_byte(local_run, data_dir, tmp_path):
    reference, report = local_run
    one = tmp_path / "one_task"
    # the fixtures from another folder too: no output may hash the inputs' absolute paths (a bundle's
    # marker once did, so CI's checkout, with the data elsewhere, wrote other bytes than the pin's)
    moved = shutil.copytree(data_dir / "sources", tmp_path / "elsewhere" / "sources")
    assert run_local(one, moved, overrides=ONE_TASK) == report
    here, there = str(data_dir / "sources").encode(), str(moved).encode()
    assert {rel: data.replace(there, here) for rel, data in files_digest(one).items()} == files_digest(reference)
    signatures = next((one / "logs" / "dedup" / "signatures").iterdir()).relative_to(one / "logs")
    for step in ("ingest", signatures):  # each stage's files went through one task
        assert len(_pids(one, step)) == 1, step
    # tokenize's tasks are its planned shards whatever the grouping: one task per shard, with all its files
    shard_pids: dict[tuple[str, str], set[str]] = {}
    for marker in (one / "tokenize" / "_done").glob("*.json"):
        stats = json.loads(marker.read_text())["stats"]
        log = (one / "logs" / "tokenize" / marker.name).with_suffix(".log").read_text()
        pid = re.search(r" pid (\d+) start", log).group(1)
        shard_pids.setdefault((stats["source"], stats["shard"]), set()).add(pid)
    assert all(len(pids) == 1 for pids in shard_pids.values())
    assert json.loads((one / "manifest.json").read_text())["attempts"][-1]["tasks"]["tokenize"] == len(shard_pids)
    assert len(_pids(one, "quality_filter")) == 2  # one task (the int_score cut), one actor call (fastText)
    alone = tmp_path / "alone_fused"
    assert run_local(alone, overrides=ALONE + ["ray.fuse_partition_stages=true"]) == report
    assert files_digest(alone) == files_digest(reference)


def test_a_killed_grouped_run_resumes_with_other_groups_to_the_same_bytes(local_run, data_dir, tmp_path):
    from tests.reliability.test_faults import _kill_group, _start
    reference, _ = local_run
    out = tmp_path / "run"
    sets = [a for s in ONE_TASK for a in ("--set", s)]
    proc = _start(out, data_dir, *sets)
    deadline = time.time() + 240
    while not any((out / "dedup" / "signatures").rglob("_done/*.json")):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the run never reached dedup"
        time.sleep(0.05)
    _kill_group(proc)
    resumed = _start(out, data_dir, "--resume", *[a for s in ALONE for a in ("--set", s)])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-3000:]
    assert files_digest(out) == files_digest(reference)
