"""Eval harness (scoring, lm-eval agreement) and the annealing-ablation command."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli.ablate import ablate
from pipelines.evaluation.ablation import compare, load_ablation_config, paired_permutation_p
from pipelines.evaluation.harness import Item, evaluate_tasks, load_task, score_items, task_files
from pipelines.evaluation.scoring import encode_pair
from pipelines.tokens.tokenizer import BOS, encode
from pipelines.training.model import load_model
from tests.conftest import DATA, REPO

EVAL = DATA / "eval"


def test_scoring_of_a_hand_computed_example():
    items = [Item("t", "t-0", "multiple_choice", "Q", ["a", "bbbb"], 1),  # raw prefers a; per char prefers bbbb
             Item("t", "t-1", "multiple_choice", "Q", ["cc", "d"], 0),  # both prefer cc
             Item("t", "t-2", "schema", "rest", ["ctx one", "ctx two"], 0)]  # schema: acc only
    lls = [-2.0, -4.0,  -1.0, -3.0,  -5.0, -6.0]
    r = score_items(items, lls)
    assert r["items"]["acc"] == [0, 1, 1] and r["items"]["acc_norm"] == [1, 1]
    assert r["acc"] == pytest.approx(2 / 3) and r["acc_norm"] == 1.0
    assert r["acc_stderr"] == pytest.approx(math.sqrt(np.var([0, 1, 1], ddof=1) / 3))
    assert items[0].requests() == [("Q", " a"), ("Q", " bbbb")]
    assert items[2].requests() == [("ctx one", " rest"), ("ctx two", " rest")]


def test_pair_encoding_splits_like_lm_eval():
    ctx, cont = encode_pair("Question: Is water wet?\nAnswer: ", "yes")  # trailing space joins the answer
    whole = encode(["Question: Is water wet?\nAnswer: yes"], append_eos=False)[0]
    assert ctx + cont == whole                                              # no BOS: trained without it
    assert cont == whole[len(encode(["Question: Is water wet?\nAnswer:"], append_eos=False)[0]):]
    ctx, cont = encode_pair("Goal: boil an egg\n", " Put it in water", add_bos=True)  # all trailing whitespace
    assert ctx == [BOS] + encode(["Goal: boil an egg"], append_eos=False)[0]
    assert ctx[1:] + cont == encode(["Goal: boil an egg\n Put it in water"], append_eos=False)[0]


def test_task_files_load_and_reject_bad_items(tmp_path):
    items = load_task(EVAL / "winogrande.jsonl")
    assert len(items) == 300 and all(i.kind == "schema" and len(i.choices) == 2 for i in items)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "x", "id": "x-0", "kind": "multiple_choice", "query": "q", "choices": ["a"], "gold": 3}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_task(bad)
    with pytest.raises(FileNotFoundError, match="local tasks: arc_challenge"):
        task_files(EVAL, ["nope"])


def test_paired_test_detects_shifts_and_not_noise():
    rng = np.random.default_rng(0)
    same = [rng.choice([-1.0, 0.0, 1.0], 300)]
    assert paired_permutation_p([same[0] - same[0]], 2000) == 1.0
    noise = [rng.choice([-1.0, 0.0, 1.0], 300, p=[0.2, 0.6, 0.2])]
    assert paired_permutation_p(noise, 2000) > 0.01
    shifted = [rng.choice([-1.0, 0.0, 1.0], 300, p=[0.1, 0.6, 0.3])]
    assert paired_permutation_p(shifted, 2000) < 0.01


def test_eval_command_on_shared_tasks(pretrained_tiny, local_run, tmp_path):
    _, summary = pretrained_tiny
    run, _ = local_run
    out = tmp_path / "eval.json"
    r = subprocess.run([sys.executable, "zyda2.py", "eval", summary["checkpoint"], "--eval-dir", str(EVAL),
                        "--tasks", "arc_easy,winogrande,hellaswag", "--limit", "25", "--run", str(run),
                        "--bpb-sequences", "4", "--seq-len", "128", "--output", str(out)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert set(res["tasks"]) == {"arc_easy", "winogrande", "hellaswag"}
    for name, t in res["tasks"].items():
        assert t["n"] == 25 and 0 <= t["acc"] <= 1 and len(t["items"]["acc"]) == 25
        assert ("acc_norm" in t) == (name != "winogrande")
    assert res["aggregate"]["score"] == pytest.approx(np.mean([res["tasks"]["arc_easy"]["acc_norm"],
                                                               res["tasks"]["winogrande"]["acc"],
                                                               res["tasks"]["hellaswag"]["acc_norm"]]))
    assert set(res["bpb"]) == set(summary["val"])
    # bits/byte agrees with the trainer's val loss (nats/token) and bytes/token
    for _comp, b in res["bpb"].items():
        assert 0.5 < b["bpb"] < 4 and b["bytes"] > b["tokens"] * 2
    assert "arc_easy" in r.stdout and "aggregate" in r.stdout


def test_scores_equal_lm_evaluation_harness(pretrained_tiny, tmp_path):
    from pipelines.evaluation.lm_eval_adapter import run_lm_eval, write_task_configs
    _, summary = pretrained_tiny
    model = load_model(summary["checkpoint"])
    names = ["arc_easy", "piqa", "winogrande", "hellaswag"]
    ours = evaluate_tasks(model, task_files(EVAL, names), limit=60)
    tasks = write_task_configs(EVAL, names, tmp_path / "tasks")
    theirs = run_lm_eval(Path(summary["checkpoint"]), tasks, limit=60, model=model, include_path=tmp_path / "tasks")
    assert set(theirs) == set(names)
    for name in names:
        for metric in ("acc", "acc_norm"):
            if metric in ours[name]:
                assert abs(ours[name][metric] - theirs[name][metric]) <= 0.005, (name, metric)
        assert theirs[name]["acc_stderr"] == pytest.approx(ours[name]["acc_stderr"], rel=1e-6)


def test_ablation_two_candidates_two_seeds(pretrained_tiny, local_run, ray_instance, tmp_path):
    cfg_run, summary = pretrained_tiny
    run, _ = local_run
    config = tmp_path / "ablate.yaml"
    config.write_text(f"""
train_config: {REPO / 'configs' / 'train-local.yaml'}
base_checkpoint: {summary['checkpoint']}
output_dir: {tmp_path / 'out'}
baseline: fwe3
candidates:
  fwe3: [{{run: '{run}', component: fwe3}}]
  dclm: [{{run: '{run}', component: dclm_crossdeduped}}]
replay: {{fraction: 0.5, mixture: [{{run: '{run}', blend: pretrain}}]}}
seeds: [0, 1]
train_overrides: ["data.mixture=[{{run: '{run}', blend: pretrain}}]", anneal.steps=4, anneal.rewarm_steps=1,
                  micro_batch=4, data.val_sequences=4]
eval: {{eval_dir: '{EVAL}', tasks: [arc_easy, winogrande], limit: 20, bpb_sequences: 4}}
permutations: 2000
""")
    cfg = load_ablation_config(config)
    result = ablate(cfg, quiet=True)
    out = Path(result["output_dir"])
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    cands = {r["candidate"] for r in rows}
    assert cands == {"(base)", "fwe3", "dclm"}
    agg = {r["candidate"]: r for r in rows if r["metric"] == "aggregate"}
    assert agg["dclm"]["p_value"] and agg["fwe3"]["p_value"] == "" and agg["dclm"]["seeds"] == "2"
    assert 0 < float(agg["dclm"]["p_value"]) <= 1
    evals = {(c, s): json.loads((out / "runs" / c / f"seed_{s}" / "eval.json").read_text())
             for c in ("fwe3", "dclm") for s in (0, 1)}
    assert float(agg["fwe3"]["mean"]) == pytest.approx(np.mean([evals[("fwe3", s)]["aggregate"]["score"]
                                                                 for s in (0, 1)]), abs=1e-6)
    # each candidate's anneal really read its own data: the anneal runs record their mixtures
    train = json.loads((out / "runs" / "dclm" / "seed_1" / "anneal" / "train.json").read_text())
    mix = train["config"]["anneal"]["mixture"]
    assert mix[0]["component"] == "dclm_crossdeduped" and mix[0]["weight"] == pytest.approx(0.5)
    assert train["config"]["data"]["seed"] == 1
    assert any(r["metric"].startswith("bpb:") for r in rows)
    md = (out / "comparison.md").read_text()
    assert "| dclm |" in md and "p=" in md
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_checkpoint_sha256"] and manifest["anneal_mixtures"]["dclm"][1]["blend"] == "pretrain"
    assert manifest["train_config"]["anneal"]["steps"] == 4
    before = (out / "comparison.csv").read_bytes()
    ablate(cfg, quiet=True)  # everything done: only the comparison is rebuilt, identically
    assert (out / "comparison.csv").read_bytes() == before


def test_compare_flags_a_planted_difference():
    def run(seed, correct):
        return {"seed": seed, "aggregate": {"score": float(np.mean(correct))},
                "tasks": {"t": {"acc": float(np.mean(correct)), "items": {"id": list(range(200)), "acc": correct}}}}
    rng = np.random.default_rng(1)
    base = [run(s, list(rng.integers(0, 2, 200) * (rng.random(200) < 0.6))) for s in (0, 1)]
    better = [run(s, [1] * 150 + list(rng.integers(0, 2, 50))) for s in (0, 1)]
    rows = compare({"base": base, "better": better}, "base", 2000, 0.05)
    row = next(r for r in rows if r["candidate"] == "better" and r["metric"] == "aggregate")
    assert row["significant"] and row["delta"] > 0.3
