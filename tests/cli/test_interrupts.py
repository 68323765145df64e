"""SIGINT and SIGTERM stop `run` and `train` with one line (what is finished, the exact command that
resumes), exit 130/143, no traceback and no Ray process left; that command then ends byte-identical
to a run that was never interrupted."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.pipeline import PIPELINE
from pipelines.training.trainer import latest_checkpoint
from tests.conftest import REPO, files_digest
from tests.reliability.test_faults import _live_members
from tests.training.test_train import _cli_train


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "zyda2.py", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"ended before {what}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.05)


def _interrupt(proc: subprocess.Popen, sig: int, group: bool) -> str:
    """Send `sig` (to the driver, or to its whole group as a terminal's Ctrl-C does); return stderr
    after checking the exit code and that no process of the group survives."""
    (os.killpg if group else os.kill)(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    deadline = time.monotonic() + 30
    while _live_members(proc.pid) and time.monotonic() < deadline:  # Ray's processes are told to stop, not waited
        time.sleep(0.2)
    assert not _live_members(proc.pid), "Ray processes outlived the interrupted command"
    return err


def _resume_line(err: str, sig: int) -> list[str]:
    """The interrupt line must be the only line after the progress, and name the resume command."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and lines, err[-3000:]
    last = lines[-1]
    assert last.startswith(f"zyda2: interrupted by {signal.Signals(sig).name}; "), err[-3000:]
    assert all(not line.startswith("zyda2:") for line in lines[:-1]), err[-3000:]
    command = shlex.split(last.split("resume with: ", 1)[1])
    assert command[:2] == [sys.executable, "zyda2.py"] and command[-1] == "--resume"
    return command


RUN_POINTS = [  # (signal, whole group?, folder whose first file means the run is at that point)
    (signal.SIGINT, True, "ingest/_done"),
    (signal.SIGTERM, False, "quality_filter/_done"),
]


@pytest.mark.parametrize("sig, group, point", RUN_POINTS, ids=["SIGINT-group-ingest", "SIGTERM-quality_filter"])
def test_interrupted_run_says_how_to_resume_and_resumes_identically(local_run, data_dir, tmp_path, sig, group,
                                                                    point):
    reference, _ = local_run
    out = tmp_path / "run"
    proc = _start(["run", "configs/local.yaml", "--input", str(data_dir / "sources"), "--output", str(out),
                   "--quiet"])
    _wait_for(proc, lambda: (out / point).is_dir() and any((out / point).iterdir()), point)
    err = _interrupt(proc, sig, group)
    command = _resume_line(err, sig)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and not (out / "report.json").exists()
    statuses = {name: st["status"] for name, st in manifest["stages"].items()}
    assert list(statuses.values()).count("interrupted") == 1 and set(statuses) == set(manifest["stages"])
    assert all(set(st) == {"status", "seconds"} for st in manifest["stages"].values())  # one shape, always
    finished = [s.name for s in PIPELINE if statuses.get(s.name) == "done"]  # in pipeline order
    assert ("finished stages: " + (", ".join(finished) if finished else "none")) in err
    assert manifest["attempts"][0]["command"][2:] == command[2:-1]  # the command line is recorded

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert files_digest(out) == files_digest(reference)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["status"] for a in manifest["attempts"]] == ["interrupted", "done"]
    assert manifest["total_seconds"] == pytest.approx(sum(a["seconds"] for a in manifest["attempts"]), abs=0.01)
    markers = list((out / "ingest" / "_done").glob("*.json"))
    assert markers and all(json.loads(m.read_text())["seconds"] > 0 for m in markers)
    logs = list((out / "logs" / "ingest").glob("*.log"))
    assert len(logs) == len(markers) and all("done in" in p.read_text() for p in logs)

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)  # a finished run
    assert again.returncode == 0 and "is complete" in again.stderr and "[1/6 ingest]" not in again.stderr


STEPS = ["--set", "steps=8"]  # checkpoints at 4 and 8


@pytest.fixture(scope="module")
def straight_training(local_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    _cli_train(out, local_run[0], STEPS)
    return out


@pytest.mark.parametrize("sig, point", [(signal.SIGINT, "checkpoints/step_0000004"),  # after a checkpoint
                                        (signal.SIGTERM, "metrics.jsonl")],           # before the first one
                         ids=["SIGINT-after-checkpoint", "SIGTERM-before-checkpoint"])
def test_interrupted_training_resumes_bit_exact(local_run, straight_training, tmp_path, sig, point):
    run, _ = local_run
    out = tmp_path / "killed"
    proc = _cli_train(out, run, STEPS, wait=False)
    _wait_for(proc, (out / point).exists, point)
    proc.send_signal(sig)  # the trainer runs in the test's process group: signal it alone
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    ckpt = latest_checkpoint(out)
    assert lines[0].startswith(f"zyda2: interrupted by {signal.Signals(sig).name}; "
                               + (f"last checkpoint: {ckpt}" if ckpt else f"no checkpoint yet in {out}"))
    assert (ckpt is None) == (point == "metrics.jsonl") and not (out / "checkpoints" / "step_0000008").exists()
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[-1] == "--resume" and "--overwrite" not in command
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = "checkpoints/step_0000008/model/model.safetensors"
    assert (out / final).read_bytes() == (straight_training / final).read_bytes()
