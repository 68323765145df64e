"""Every expected failure of the command line is one line with the fix and exit code 2; messages
that suggest a flag suggest one the parser knows; help shows examples; `make -n` runs nothing."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import zyda2
from tests.conftest import REPO


def cli(*argv: str, python: list[str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*(python or [sys.executable]), "zyda2.py", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    """The whole stderr is one `zyda2: error: ...` line and the exit code is 2."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("zyda2: error: "), res.stderr[-3000:]
    return lines[0]


def run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "configs/local.yaml", "--input", str(data), "--output", str(out), "--quiet", *extra]


def test_empty_source_folders_are_an_error_not_a_run(tmp_path):
    empty = tmp_path / "in"
    for folder in ("dclm", "fineweb-edu", "zyda", "dolma-cc"):
        (empty / folder).mkdir(parents=True)
    err = one_line_error(cli(*run_args(empty, tmp_path / "o")))
    assert "no input files" in err and str(empty / "fineweb-edu") in err
    err = one_line_error(cli(*run_args(empty, tmp_path / "o2", "--allow-empty")))  # nothing at all: no flag helps
    assert "no input files" in err


def test_partial_input_names_the_empty_source_and_the_fix(data_dir, tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for folder in ("dclm", "fineweb-edu", "zyda", "dolma-cc"):
        (inp / folder).symlink_to(data_dir / "sources" / folder, target_is_directory=True)
    (inp / "zyda").unlink()
    (inp / "zyda").mkdir()
    err = one_line_error(cli(*run_args(inp, tmp_path / "o")))
    assert "source zyda has no input file" in err and "--sources dclm,dolma-cc,fwe" in err and "--allow-empty" in err
    (inp / "zyda").rmdir()
    err = one_line_error(cli(*run_args(inp, tmp_path / "o")))  # a missing folder is explained the same way
    assert f"sources.zyda.path: folder does not exist: {inp / 'zyda'}" in err and "--sources" in err
    plan = cli(*run_args(inp, tmp_path / "o", "--sources", "dclm,fineweb-edu", "--plan"))
    assert plan.returncode == 0, plan.stderr
    assert "source zyda: disabled" in plan.stdout and "source dolma-cc: disabled" in plan.stdout
    n_dclm = len([p for p in (data_dir / "sources" / "dclm").rglob("*") if p.is_file()])
    assert f"source dclm: {n_dclm} files" in plan.stdout and "plan only: nothing was run" in plan.stdout
    assert "stages (6): ingest -> heuristic_filter -> dedup -> quality_filter -> tokenize -> shards" in plan.stdout
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # --plan wrote nothing


def test_a_source_that_ingests_nothing_fails_and_downstream_commands_say_why(data_dir, tmp_path):
    inp = tmp_path / "in"
    (inp / "fineweb-edu").mkdir(parents=True)
    bad = data_dir / "sources_bad" / "fineweb_edu_no_text_column.parquet"
    (inp / "fineweb-edu" / "no_text.parquet").symlink_to(bad)
    out = tmp_path / "o"
    err = one_line_error(cli(*run_args(inp, out, "--sources", "fwe")))
    assert "no document survived ingest in any source" in err and "missing_column 10" in err
    assert str(out / "quarantine") in err
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    err = one_line_error(cli("stats", str(out)))
    assert "not a finished zyda2 run" in err
    err = one_line_error(cli("train", "configs/train-local.yaml", "--output", str(tmp_path / "t"),
                             "--set", f"data.mixture=[{{run: '{out}', blend: pretrain}}]"))
    assert "no shards/" in err


def test_run_folder_messages(local_run, tmp_path):
    reference, _ = local_run
    data = ["--input", str(REPO.parent / "shared" / "data" / "sources")]
    err = one_line_error(cli("run", "configs/local.yaml", "--input", str(tmp_path / "nowhere"), "--output",
                             str(tmp_path / "o")))
    assert err == f"zyda2: error: --input/input_dir: folder does not exist: {tmp_path / 'nowhere'}"
    err = one_line_error(cli("run", "configs/local.yaml", *data, "--output", str(tmp_path / "o"), "--resume",
                             "--overwrite"))
    assert "--resume and --overwrite contradict each other" in err
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    err = one_line_error(cli("run", "configs/local.yaml", *data, "--output", str(tmp_path / "photos"), "--overwrite"))
    assert "not a zyda2 run folder" in err and (tmp_path / "photos" / "cat.jpg").exists()
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(reference / "manifest.json", copy / "manifest.json")
    err = one_line_error(cli("run", "configs/local.yaml", *data, "--output", str(copy), "--resume",
                             "--set", "dedup.seed=1", "--set", "dedup.bands=4"))
    assert "differing keys: dedup.bands (8 -> 4), dedup.seed (10 -> 1)" in err
    for folder, flags, expected in ((copy, ["--resume", "--set", "dedup.seed=1"], "differing keys: dedup.seed"),
                                    (copy, [], "already holds a run"),
                                    (tmp_path / "photos", [], "not a zyda2 run folder")):
        err = one_line_error(cli("run", "configs/local.yaml", *data, "--output", str(folder), "--plan", *flags))
        assert expected in err  # a plan says the run would be refused, as the run itself does
    err = one_line_error(cli("run", "configs/local.yaml", *data, "--output", str(copy), "--sources", "fwee"))
    assert "--sources: unknown source 'fwee' (did you mean fwe?)" in err


def test_dedup_into_an_existing_folder_suggests_a_flag_it_accepts(local_run, tmp_path):
    reference, _ = local_run
    out = tmp_path / "d"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"status": "running", "config_hash": "x"}))
    err = one_line_error(cli("dedup", str(reference), "--output", str(out)))
    assert "pass --resume" in err
    err = one_line_error(cli("dedup", str(reference), "--output", str(out), "--resume"))  # accepted: config check
    assert "was started with another config" in err


def test_eval_messages(tmp_path, data_dir):
    run = tmp_path / "train-run"
    (run / "checkpoints").mkdir(parents=True)
    err = one_line_error(cli("eval", str(run)))
    assert "not a checkpoint" in err and "model/ and state.pt" in err and "pick one in" in err
    ckpt = run / "checkpoints" / "step_0000010"
    (ckpt / "model").mkdir(parents=True)
    (ckpt / "model" / "config.json").write_text("{}")
    err = one_line_error(cli("eval", str(ckpt), "--tasks", "arc_eazy", "--eval-dir", str(data_dir / "eval")))
    assert "--tasks: unknown task 'arc_eazy' (did you mean arc_easy" in err and "lm-eval ls tasks" in err


def test_missing_environment_is_one_line():
    res = cli("show-config", "configs/local.yaml", python=[sys.executable, "-S"])  # no site-packages: no yaml
    err = one_line_error(res)
    assert "is missing: run with the project's environment" in err


def test_verbose_flag_after_the_command(tmp_path):
    res = cli("show-config", "configs/local.yaml", "-v")
    assert res.returncode == 0 and "# config hash:" in res.stdout


def test_every_command_help_has_an_example():
    parser = zyda2.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        text = sub.format_help()
        assert "example" in text and f"python zyda2.py {name} " in text, name
        assert all(a.help for a in sub._actions), name  # every option says what it does


# flags of other command lines that messages mention: `ray start --head`, Megatron's --data-path,
# lm_eval's --model/--model_args, `ray job logs --follow`, sbatch --nodes, `python -m jobs.cluster --head-tasks`
FOREIGN_FLAGS = {"--head", "--data-path", "--train-data-path", "--valid-data-path", "--model_args", "--model",
                 "--follow", "--nodes", "--head-tasks"}  # flags of Megatron, lm-eval, ray, srun named in messages


def _messages(path: Path) -> list[str]:
    """Every string literal of a module (f-string pieces too)."""
    return [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def test_every_flag_a_message_suggests_exists():
    parser = zyda2.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    known = {s for sub in [parser, *commands.values()] for a in sub._actions for s in a.option_strings}
    files = [REPO / "zyda2.py", *sorted((REPO / "pipelines").rglob("*.py")), *sorted((REPO / "dedup").glob("*.py")),
             *sorted((REPO / "filters").glob("*.py")), *sorted((REPO / "jobs").glob("*.py"))]
    suggested = {}
    for path in files:
        for text in _messages(path):
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*[a-z0-9])(?![\w-])", text):
                suggested.setdefault(flag, path.name)
    unknown = {f: where for f, where in suggested.items() if f not in known and f not in FOREIGN_FLAGS}
    assert not unknown
    assert {"--resume", "--overwrite", "--sources", "--allow-empty", "--input"} <= set(suggested)


def test_make_n_demo_has_no_side_effects(tmp_path):
    before = sorted(p.as_posix() for p in (REPO / "runs").rglob("*")) if (REPO / "runs").exists() else []
    res = subprocess.run(["make", "-n", "demo", f"ZYDA2_DATA={REPO.parent / 'shared' / 'data'}"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "zyda2.py run configs/local.yaml --overwrite" in res.stdout
    after = sorted(p.as_posix() for p in (REPO / "runs").rglob("*")) if (REPO / "runs").exists() else []
    assert after == before


def test_eval_quality_warns_when_the_labels_overlap_training(data_dir, tmp_path):
    from filters.quality import read_labels, split
    labels = data_dir / "quality" / "labels.jsonl"
    model = tmp_path / "q.ftz"
    assert cli("train-quality", str(labels), "--output", str(model)).returncode == 0
    _, _, test = split(read_labels(labels), seed=0)  # the split train-quality holds out
    rows = [json.loads(line) for line in labels.read_text().splitlines() if line.strip()]
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows if r["text"] in set(test.texts)))
    n_train = len(rows) - len(test.texts)  # the final model is fitted on train + valid

    res = cli("eval-quality", str(model), str(labels))
    assert res.returncode == 0 and json.loads(res.stdout)["train_overlap"]["documents"] == n_train
    assert f"zyda2: warning: {n_train:,} of {len(rows):,} documents" in res.stderr and "optimistic" in res.stderr
    res = cli("eval-quality", str(model), str(held_out))
    assert res.returncode == 0 and json.loads(res.stdout)["train_overlap"]["documents"] == 0
    assert "warning" not in res.stderr


@pytest.mark.parametrize("argv, expected", [
    (["rnu", "configs/local.yaml"], "invalid choice: 'rnu' (did you mean run?)"),
    (["run", "configs/local.yaml", "--sorces", "dclm"],
     "unrecognized arguments: --sorces dclm (did you mean --sources?)"),
    (["eval", "ckpt", "--batch-size", "many"], "argument --batch-size: invalid int value: 'many'"),
    (["run"], "zyda2.py run: the following arguments are required: config"),
])
def test_usage_errors_are_one_line_with_a_suggestion(argv, expected):
    err = one_line_error(cli(*argv))
    assert expected in err and err.endswith("--help")
