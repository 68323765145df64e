"""The command line: help for every command, clear errors with exit code 2, a full run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import zyda2
from tests.conftest import REPO


def test_help_for_every_command():
    parser = zyda2.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert {"run", "show-config"} <= set(commands)
    for name in [None, *commands]:
        args = [sys.executable, "zyda2.py"] + ([name] if name else []) + ["--help"]
        res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and "usage: zyda2.py" in res.stdout, name


def test_config_error_is_one_line_and_exit_2(capsys):
    assert zyda2.main(["show-config", "configs/local.yaml", "--set", "dedup.rows=17"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "zyda2: error: dedup.bands: bands x rows (8 x 17) must not exceed num_hashes (128)"


def test_run_command_end_to_end(ray_instance, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", str(REPO / "configs" / "local.yaml"), "--input", str(data_dir / "sources"),
            "--output", str(out), "--set", "ingest.max_docs_per_file=10", "--quiet"]
    assert zyda2.main(argv) == 0
    printed = capsys.readouterr().out
    assert "read 110 docs: kept " in printed and str(out / "report.json") in printed
    assert json.loads((out / "report.json").read_text())["totals"]["read"] == 110
    assert zyda2.main(argv) == 2  # the folder holds a run now
    assert "--resume" in capsys.readouterr().err
    assert zyda2.main(argv + ["--resume"]) == 0


@pytest.mark.parametrize("argv", [["run"], ["show-config"], ["nope"]])
def test_bad_usage_exits_nonzero(argv):
    with pytest.raises(SystemExit) as e:
        zyda2.main(argv)
    assert e.value.code == 2
