"""lm-evaluation-harness's own `hf` model on a checkpoint folder, as users run it, equals `zyda2.py eval`.

Both sides run as commands: `python -m lm_eval run --model hf --model_args pretrained=<checkpoint>` (no
other model argument: the tokenizer comes from the folder) over task YAMLs written here for the
shared eval files, and `zyda2.py eval`. Compared: every item's per-choice log-likelihoods, acc and
acc_norm, and the task means.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA, REPO

TASKS = ("arc_easy", "piqa", "winogrande", "hellaswag", "openbookqa")
LIMIT = 40


def task_yaml(name: str) -> dict:
    """lm-eval's multiple-choice task over a shared JSONL file; WinoGrande-style `schema` items use
    lm-eval's multiple-input form (the choices are contexts, the query the shared continuation)."""
    path = DATA / "eval" / f"{name}.jsonl"
    schema = json.loads(path.read_text().splitlines()[0])["kind"] == "schema"
    return {"task": f"local_{name}", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(path)}},
            "test_split": "test", "output_type": "multiple_choice",
            "doc_to_text": "{{gold}}" if schema else "{{query}}",
            "doc_to_target": "{{query}}" if schema else "{{gold}}",
            "doc_to_choice": "{{choices}}",
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                            for m in (("acc",) if schema else ("acc", "acc_norm"))]}


@pytest.fixture(scope="module")
def checkpoint(pretrained_tiny) -> Path:
    return Path(pretrained_tiny[1]["checkpoint"])


def test_lm_eval_hf_model_equals_zyda2_eval(checkpoint, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name in TASKS:
        (tasks / f"local_{name}.yaml").write_text(json.dumps(task_yaml(name), indent=1))  # JSON is YAML
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    lm = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf",
                         "--model_args", f"pretrained={checkpoint}", "--device", "cpu",
                         "--tasks", ",".join(f"local_{t}" for t in TASKS), "--include_path", str(tasks),
                         "--limit", str(LIMIT), "--output_path", str(tmp_path / "lm_eval"), "--log_samples"],
                        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert lm.returncode == 0, lm.stderr[-3000:]
    ours_json = tmp_path / "ours.json"
    ours = subprocess.run([sys.executable, "zyda2.py", "eval", str(checkpoint), "--eval-dir", str(DATA / "eval"),
                           "--tasks", ",".join(TASKS), "--limit", str(LIMIT), "--output", str(ours_json)],
                          cwd=REPO, capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr[-3000:]
    ours = json.loads(ours_json.read_text())["tasks"]
    results = json.loads(next((tmp_path / "lm_eval").rglob("results_*.json")).read_text())["results"]
    for name in TASKS:
        samples = [json.loads(line) for line in
                   next((tmp_path / "lm_eval").rglob(f"samples_local_{name}_*.jsonl")).read_text().splitlines()]
        samples.sort(key=lambda s: s["doc_id"])
        mine = ours[name]
        assert [s["doc"]["id"] for s in samples] == mine["items"]["id"] and len(samples) == LIMIT
        for s, lls, acc in zip(samples, mine["items"]["loglikelihoods"], mine["items"]["acc"]):
            theirs = [float(r[0]) for r in s["filtered_resps"]]
            assert theirs == pytest.approx(lls, rel=1e-4, abs=1e-3), (name, s["doc_id"])
            assert s["acc"] == acc, (name, s["doc_id"])
        if "acc_norm" in mine:
            assert [s["acc_norm"] for s in samples] == mine["items"]["acc_norm"]
        for metric in ("acc", "acc_norm"):
            if metric in mine:
                assert results[f"local_{name}"][f"{metric},none"] == pytest.approx(mine[metric], abs=1e-12)
    # PIQA's goals end in "\n": the whitespace the split moves is more than spaces
    piqa = [json.loads(line) for line in (DATA / "eval" / "piqa.jsonl").read_text().splitlines()[:LIMIT]]
    assert any(d["query"].rstrip() != d["query"].rstrip(" ") for d in piqa)
