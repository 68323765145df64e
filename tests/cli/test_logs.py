"""A bug (not an expected failure) keeps its traceback in the run folder: the failing task's own log,
RUN/logs/error.log, and the manifest's attempt record."""

from __future__ import annotations

import json

import pytest

import zyda2
from tests.conftest import REPO


def test_a_failing_task_leaves_its_traceback_in_the_run_folder(ray_instance, data_dir, tmp_path, monkeypatch,
                                                                 capsys):
    from pipelines.pipeline import PIPELINE

    def planted(part, cfg):
        raise RuntimeError(f"planted bug in {part.file.rel}")
    monkeypatch.setattr(PIPELINE.stages[0], "process", planted)  # the instance travels to the workers
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="planted bug"):
        zyda2.main(["run", str(REPO / "configs" / "local.yaml"), "--input", str(data_dir / "sources"),
                    "--output", str(out), "--quiet", "--sources", "zyda"])
    err = capsys.readouterr().err
    assert f"zyda2: internal error (a bug, please report it); traceback below and in {out}/logs/error.log" in err
    assert "planted bug" in (out / "logs" / "error.log").read_text()
    task_logs = sorted((out / "logs" / "ingest").glob("zyda__*.log"))
    assert task_logs and any("failed:\nTraceback" in p.read_text() and "planted bug" in p.read_text()
                             for p in task_logs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["stages"]["ingest"]["status"] == "failed"
    assert "planted bug" in manifest["attempts"][-1]["error"]
    assert "attempt 1 failed: " in (out / "logs" / "run.log").read_text()
