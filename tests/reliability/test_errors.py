"""Environment problems end in one line that names the fix, with exit code 2."""

from __future__ import annotations

import errno

import fsspec
import pytest
from fsspec.spec import AbstractFileSystem

import zyda2
from tests.conftest import REPO


def run_cli(capsys, *argv) -> str:
    assert zyda2.main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("zyda2: error: ")
    return err


def test_unreachable_cluster(capsys, tmp_path):
    err = run_cli(capsys, "run", str(REPO / "configs" / "local.yaml"), "--output", str(tmp_path / "o"),
                  "--set", "ray.address=127.0.0.1:1", "--quiet")
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err and "ray start --head" in err


class DeniedFS(AbstractFileSystem):
    protocol = "deniedfs"

    def glob(self, path, **kwargs):
        raise PermissionError("401 Client Error: Unauthorized for url")


def test_missing_credentials(capsys, tmp_path):
    fsspec.register_implementation("deniedfs", DeniedFS, clobber=True)
    err = run_cli(capsys, "run", str(REPO / "configs" / "zyda2.yaml"), "--output", str(tmp_path / "o"),
                  "--set", "sources.fwe.path=deniedfs://datasets/private", "--set", "sources.dclm.enabled=false",
                  "--set", "sources.zyda.enabled=false", "--set", "sources.dolma-cc.enabled=false", "--quiet")
    assert "sources.fwe: cannot list deniedfs://datasets/private" in err and "HF_TOKEN" in err


def test_disk_full(capsys, tmp_path, monkeypatch):
    import pipelines.core.run

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(pipelines.core.run, "write_json", full)
    err = run_cli(capsys, "run", str(REPO / "configs" / "local.yaml"), "--output", str(tmp_path / "o"), "--quiet")
    assert "disk full writing" in err and "manifest.json" in err and "--resume" in err


def test_missing_model_weights(capsys, tmp_path):
    err = run_cli(capsys, "show-config", str(REPO / "configs" / "local.yaml"),
                  "--set", f"quality_filter.model={tmp_path / 'none.ftz'}")
    assert "fastText model not found" in err and "train-quality" in err
    err = run_cli(capsys, "eval-quality", str(tmp_path / "no-deberta"), str(tmp_path / "labels.jsonl"))
    assert "does not exist" in err and "huggingface-cli download" in err


@pytest.mark.parametrize("argv", [["dedup", "/no/such/run", "--output", "/tmp/x"]])
def test_not_a_run_folder(capsys, argv):
    assert "not a zyda2 run folder" in run_cli(capsys, *argv)
