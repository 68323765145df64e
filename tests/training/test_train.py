"""The Zamba2 trainer on shards the pipeline wrote from the shared fixtures."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.training import TrainError
from pipelines.training.model import EOS_ID, count_parameters, load_model, zamba2_config
from pipelines.training.schedule import anneal_lr, pretrain_lr
from pipelines.training.token_stream import DocumentStream, PackedSequences, mixture_sources
from pipelines.training.train_config import AnnealConfig, ConfigError, MixtureEntry, ScheduleConfig, load_train_config
from pipelines.training.trainer import evaluate, train, validation_sets
from tests.conftest import REPO

CONFIG = REPO / "configs" / "train-local.yaml"


def tiny_config(run: Path, out: Path, *extra: str):
    """configs/train-local.yaml pointed at a test run's shards."""
    mixture = f"[{{run: '{run}', blend: pretrain}}]"
    anneal = f"[{{run: '{run}', blend: anneal}}]"
    return load_train_config(CONFIG, [f"data.mixture={mixture}", f"anneal.mixture={anneal}", *extra],
                             output_dir=str(out))


def test_val_loss_falls_clearly_below_unigram_entropy(pretrained_tiny):
    cfg, summary = pretrained_tiny
    records = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 151))
    assert steps[0]["loss"] == pytest.approx(math.log(32000), abs=0.6)  # starts near uniform
    # 0.2 nats: since the split follows dedup clusters and texts, val holds no copy of a training
    # document (before, exact duplicates leaked and lowered val loss); measured 7.03 vs entropy 7.28
    assert summary["val_loss"] < summary["unigram_entropy"] - 0.2, summary
    assert set(summary["val"]) == {"dclm_crossdeduped", "fwe3", "zyda_crossdeduped-filtered",
                                   "dolma-cc_crossdeduped-filtered"}
    png = (Path(cfg.output_dir) / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_checkpoint_reloads_into_zamba2_and_generates(pretrained_tiny):
    from transformers import Zamba2ForCausalLM

    from pipelines.tokens.tokenizer import BOS, decode, encode
    cfg, summary = pretrained_tiny
    model = load_model(summary["checkpoint"])
    assert isinstance(model, Zamba2ForCausalLM)
    val = evaluate(model, validation_sets(Path(cfg.data.val_run), cfg.data.seq_len, cfg.data.val_sequences),
                   cfg.micro_batch, torch.device("cpu"), None)
    assert np.mean(list(val.values())) == pytest.approx(summary["val_loss"], abs=1e-5)
    prompt = torch.tensor([[BOS] + encode(["The history of the"], append_eos=False)[0]])
    out = model.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=EOS_ID)
    assert out.shape == (1, prompt.shape[1] + 12) or (out[0, -1] == EOS_ID)
    assert decode(out[0, prompt.shape[1]:].tolist()).strip()


def test_anneal_follows_the_configured_lr_shape(pretrained_tiny, tmp_path):
    cfg, summary = pretrained_tiny
    cfg = copy.deepcopy(cfg)
    cfg.output_dir = str(tmp_path / "anneal")
    cfg.anneal.steps, cfg.anneal.rewarm_steps = 12, 3
    result = train(cfg, "anneal", init_from=Path(summary["checkpoint"]), quiet=True)
    records = [json.loads(line) for line in (tmp_path / "anneal" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if "loss" in r]
    peak = cfg.optim.lr
    assert lrs[:3] == pytest.approx([0.25 * peak, 0.5 * peak, 0.75 * peak])
    assert max(lrs) == pytest.approx(0.75 * peak) and lrs[-1] == 0.0
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    first = next(r for r in records if "loss" in r)
    assert first["loss"] < summary["unigram_entropy"]  # starts from the pretrained weights, not from scratch
    assert result["val_loss"] < summary["unigram_entropy"]


def _cli_train(out: Path, run: Path, extra: list[str] = (), wait: bool = True):
    cmd = [sys.executable, str(REPO / "zyda2.py"), "train", str(CONFIG), "--output", str(out), "--quiet",
           "--set", f"data.mixture=[{{run: '{run}', blend: pretrain}}]", "--set", "steps=14",
           "--set", "checkpoint_every=4", "--set", "eval_every=7", "--set", "data.seq_len=64",
           "--set", "micro_batch=4", "--set", "grad_accum=2", "--set", "schedule.warmup_steps=3", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    return proc


def _losses(out: Path) -> list[tuple]:
    return [(r["step"], r.get("loss"), r.get("lr"), r.get("grad_norm"), r.get("val_loss"))
            for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def test_killed_training_resumes_bit_exact(local_run, tmp_path):
    run, _ = local_run
    _cli_train(tmp_path / "straight", run)
    proc = _cli_train(tmp_path / "killed", run, wait=False)
    first_ckpt = tmp_path / "killed" / "checkpoints" / "step_0000004"
    deadline = time.monotonic() + 300
    while not first_ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("step_*"))
    assert "step_0000014" not in done  # it really stopped part-way
    _cli_train(tmp_path / "killed", run, ["--resume"])
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "straight")
    final = "checkpoints/step_0000014/model/model.safetensors"
    assert (tmp_path / "killed" / final).read_bytes() == (tmp_path / "straight" / final).read_bytes()


def test_existing_folder_needs_resume_or_overwrite_and_same_config(local_run, tmp_path):
    run, _ = local_run
    cfg = tiny_config(run, tmp_path / "t", "steps=2", "eval_every=2", "checkpoint_every=2", "data.seq_len=32",
                      "micro_batch=2", "schedule.warmup_steps=1", "data.val_sequences=2")
    train(cfg, quiet=True)
    with pytest.raises(TrainError, match="--resume"):
        train(cfg, quiet=True)
    cfg.optim.lr = 1e-4
    with pytest.raises(TrainError, match="another config"):
        train(cfg, resume=True, quiet=True)
    summary = train(cfg, overwrite=True, quiet=True)
    assert summary["steps"] == 2
    with pytest.raises(TrainError, match="--from"):
        train(cfg, "anneal", quiet=True)


def test_config_errors_name_the_key(local_run, tmp_path):
    run, _ = local_run
    with pytest.raises(ConfigError, match="model: unknown preset 'huge'"):
        tiny_config(run, tmp_path, "model=huge")
    with pytest.raises(ConfigError, match=r"data.mixture\[0\].run: no shards/"):
        load_train_config(CONFIG, [f"data.mixture=[{{run: '{tmp_path}', blend: pretrain}}]"])
    with pytest.raises(ConfigError, match=r"exactly one of blend or component"):
        load_train_config(CONFIG, [f"data.mixture=[{{run: '{run}'}}]"])
    with pytest.raises(ConfigError, match="anneal.rewarm_fraction"):
        tiny_config(run, tmp_path, "anneal.rewarm_fraction=1.5")


def test_cli_reports_a_stale_folder_in_one_line(local_run, tmp_path):
    run, _ = local_run
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.json").write_text(json.dumps({"phase": "pretrain", "hash": "x"}))
    r = subprocess.run([sys.executable, "zyda2.py", "train", str(CONFIG), "--output", str(tmp_path / "t"),
                        "--set", f"data.mixture=[{{run: '{run}', blend: pretrain}}]"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--resume" in r.stderr


def test_schedules():
    sched = ScheduleConfig(kind="cosine", warmup_steps=10)
    lrs = [pretrain_lr(s, 100, 1.0, sched, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    wsd = ScheduleConfig(kind="wsd", warmup_steps=10, decay_fraction=0.2)
    lrs = [pretrain_lr(s, 100, 1.0, wsd, 0.1) for s in range(100)]
    assert lrs[10:80] == [1.0] * 70 and lrs[-1] == pytest.approx(0.1)
    assert np.allclose(np.diff(lrs[80:]), -0.9 / 20)
    ann = AnnealConfig(steps=20, rewarm_steps=4, rewarm_fraction=0.75, decay="cosine")
    lrs = [anneal_lr(s, 2.0, ann) for s in range(20)]
    assert lrs[3] == pytest.approx(1.5) and max(lrs) == pytest.approx(1.5) and lrs[-1] == pytest.approx(0.0)


def test_packed_stream_is_the_shuffled_documents_with_eos(local_run):
    run, _ = local_run
    sources = mixture_sources([MixtureEntry(run=str(run), component="fwe3")])
    ds = sources[0].dataset
    stream = DocumentStream(ds, seed=5, index=0)
    order = np.random.default_rng([5, 0, 0]).permutation(len(ds))
    expected = np.concatenate([ds[int(i)] for i in order])
    assert (stream.tokens(0, len(expected)) == expected).all()
    assert all(ds[i][-1] == EOS_ID for i in range(len(ds)))  # documents end in EOS: packing keeps boundaries
    across = stream.tokens(len(expected) - 10, 20)  # a window across the epoch boundary reshuffles
    second = np.random.default_rng([5, 0, 1]).permutation(len(ds))
    assert (across[:10] == expected[-10:]).all() and (across[10:] == ds[int(second[0])][:10]).all()
    seq = PackedSequences(sources[:1], 64, seed=5, n_samples=10)
    assert (seq.batch(0, 10)[:, :64].reshape(-1) == expected[:640]).all()  # windows tile the stream
    assert (seq.sample(3)[64] == seq.sample(4)[0])  # inputs and shifted targets overlap by one token
    other = PackedSequences(sources[:1], 64, seed=6, n_samples=10)
    assert not (other.batch(0, 10) == seq.batch(0, 10)).all()


@pytest.mark.parametrize("preset,billions,tolerance", [("zamba2-1.2b", 1.2, 0.05), ("zamba2-2.7b", 2.7, 0.05),
                                                       ("zamba2-7b", 7.4, 0.05)])
def test_large_presets_mirror_the_released_sizes(preset, billions, tolerance):
    from transformers import Zamba2ForCausalLM
    config = zamba2_config(preset)
    with torch.device("meta"):
        model = Zamba2ForCausalLM(config)
    assert abs(count_parameters(model) / 1e9 - billions) / billions < tolerance
    assert config.layers_block_type.count("hybrid") == config.num_hidden_layers // 6
