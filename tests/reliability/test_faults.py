"""Fault injection: a killed driver resumes to the same bytes; killed Ray workers are retried."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, files_digest, run_local


def _start(out: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "zyda2.py", "run", "configs/local.yaml", "--input", str(data_dir / "sources"),
           "--output", str(out), "--quiet", *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: the driver and the Ray it starts


def _live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are still running (zombies excluded)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its group (the Ray instance it started) until none runs."""
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        proc.poll()
        if not _live_members(proc.pid):
            break
        time.sleep(0.2)
    proc.wait(timeout=30)
    assert not _live_members(proc.pid), f"process group {proc.pid} survived SIGKILL"


@pytest.mark.parametrize("stage_dir, seed", [("dedup/signatures/char25_128h_32b_seed10/_done", 1),
                                             ("dedup/_done", 2), ("tokenize/_done", 3)])
def test_sigkill_driver_then_resume_gives_identical_outputs(local_run, data_dir, tmp_path, stage_dir, seed):
    reference, _ = local_run
    out = tmp_path / "run"
    proc = _start(out, data_dir)
    deadline = time.time() + 240
    while not (out / stage_dir).is_dir() or not any((out / stage_dir).iterdir()):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the run never reached the stage"
        time.sleep(0.05)
    time.sleep(random.Random(seed).uniform(0, 0.3))
    _kill_group(proc)
    assert not (out / "report.json").exists() or stage_dir == "tokenize/_done"
    resumed = _start(out, data_dir, "--resume", "--set", "ray.task_cpus=1")  # and with another worker count
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-3000:]
    assert files_digest(out) == files_digest(reference)


def test_killed_ray_workers_are_retried_with_identical_outputs(local_run, data_dir, tmp_path):
    """SIGKILL Ray worker processes while they run partition tasks; Ray retries them."""
    import ray
    reference, _ = local_run
    killed: list[int] = []
    stop = threading.Event()

    def killer():
        while not stop.is_set() and len(killed) < 3:
            for status in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    cmd = status.read_bytes()
                except OSError:
                    continue
                if cmd.startswith(b"ray::task") or cmd.startswith(b"ray::bucket_map"):
                    pid = int(status.parent.name)
                    if pid not in killed:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        break
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = tmp_path / "run"
    try:
        report = run_local(out, data_dir / "sources")
    finally:
        stop.set()
        thread.join()
    assert killed, "no worker was caught running a task"
    assert report["totals"]["balanced"]
    assert files_digest(out) == files_digest(reference)
    assert ray.is_initialized()
