"""Pretraining and annealing loops for Zamba2 on the pipeline's token shards.

One loop serves both phases; they differ only in mixture, step budget, LR function and where the
weights start. Everything a step depends on is a function of the step number (the data stream
and the LR) or is in the checkpoint (weights, AdamW moments, RNG states), so a killed run resumes
bit-exactly on CPU.

Output folder:
  train.json             what this run is (config, phase, base checkpoint) - resume checks it
  metrics.jsonl          one record per step (loss, lr, grad norm, tokens/s) and per evaluation
  checkpoints/step_NNNNNNN/{config.json, model.safetensors, tokenizer.model, tokenizer_config.json (a Hugging
  Face model folder), model/ (the same files, hard-linked), state.pt}, checkpoints/latest
  loss.png, summary.json
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.core.outputs import write_text
from pipelines.core.progress import format_seconds
from pipelines.tokens.hf_tokenizer import save_tokenizer, trained_add_bos
from pipelines.training import TrainError
from pipelines.training.curves import plot_training
from pipelines.training.model import (
    VOCAB_SIZE,
    build_model,
    count_parameters,
    flops_per_token,
    load_model,
    zamba2_config,
)
from pipelines.training.schedule import anneal_lr, pretrain_lr
from pipelines.training.token_stream import (
    PackedSequences,
    mixture_sources,
    unigram_entropy,
    validation_sequences,
    validation_shards,
)
from pipelines.training.train_config import TrainConfig


def _quiet_transformers() -> None:
    """No per-save progress bars, and the CPU fallback notice for the Mamba kernels only once per run."""
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def pick_device(cfg: TrainConfig) -> tuple[torch.device, torch.dtype | None]:
    cuda = torch.cuda.is_available() if cfg.device == "auto" else cfg.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise TrainError("device: cuda requested but no CUDA device is available")
    device = torch.device("cuda" if cuda else "cpu")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    return device, torch.bfloat16 if bf16 else None


def sequence_loss(model, batch: torch.Tensor, autocast_dtype) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of a batch of seq_len + 1 token windows."""
    with torch.autocast(batch.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate(model, val_sets: dict[str, np.ndarray], micro_batch: int, device, autocast_dtype) -> dict[str, float]:
    """Mean loss per validation component (same fixed sequences every time)."""
    model.eval()
    out = {}
    for name, seqs in val_sets.items():
        total, n = 0.0, 0
        for i in range(0, len(seqs), micro_batch):
            batch = torch.from_numpy(seqs[i:i + micro_batch]).to(device)
            total += sequence_loss(model, batch, autocast_dtype).item() * len(batch)
            n += len(batch)
        out[name] = total / n
    model.train()
    return out


def validation_sets(run: Path, seq_len: int, max_sequences: int) -> dict[str, np.ndarray]:
    sets = {name: validation_sequences(ds, seq_len, max_sequences) for name, ds in validation_shards(run).items()}
    return {name: seqs for name, seqs in sets.items() if len(seqs)}


def param_groups(model, weight_decay: float) -> list[dict]:
    """Decay matrices only: norms, biases and the SSM's A/D/dt are per-channel scales."""
    unique = {id(p): (n, p) for n, p in model.named_parameters() if p.requires_grad}.values()
    decay = [p for n, p in unique if p.ndim >= 2]
    rest = [p for n, p in unique if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, model, optimizer, meta: dict, keep: int, add_bos: bool = False) -> Path:
    """Write to a temp folder and rename, then move `latest`: a kill never leaves a torn checkpoint.

    The step folder is a complete Hugging Face model folder (weights, config, the tokenizer with the
    data's BOS policy) plus `state.pt`; `model/` holds the same files as hard links (no extra bytes)
    for scripts that load `<step>/model`. `outputs.atomic_path` renames single files, so the folder is
    renamed here (it is the same pattern: temporary name in the same folder, then `os.replace`)."""
    root = out / "checkpoints"
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp-step_{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    save_tokenizer(tmp, add_bos, model.config.max_position_embeddings)
    (tmp / "model").mkdir()
    for f in sorted(tmp.iterdir()):
        if f.is_file():
            os.link(f, tmp / "model" / f.name)
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "rng": _rng_state(), **meta}, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_text(root / "latest", final.name + "\n")
    steps = sorted(p for p in root.glob("step_*") if p != final)
    for old in steps[:max(0, len(steps) - (keep - 1))]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / "latest"
    return out / "checkpoints" / pointer.read_text().strip() if pointer.is_file() else None


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records written after the checkpoint we resume from (the resumed run writes them again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _prepare_folder(out: Path, identity: dict, resume: bool, overwrite: bool) -> Path | None:
    marker = out / "train.json"
    if overwrite and out.exists():
        shutil.rmtree(out)
    if marker.exists():
        if not resume:
            raise TrainError(f"{out} already holds a training run: pass --resume to continue it or --overwrite")
        saved = json.loads(marker.read_text())
        if saved["hash"] != identity["hash"] or saved["phase"] != identity["phase"]:
            raise TrainError(f"{out} holds a run with another config (hash {saved['hash']}, phase {saved['phase']}); "
                             "--resume needs the same config, --overwrite starts over")
        return latest_checkpoint(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(identity, indent=2) + "\n")
    return None


class Log:
    """Metrics to JSONL (every step) and a progress line to stderr (every `every` steps)."""

    def __init__(self, path: Path, total: int, every: int, quiet: bool):
        self.file = open(path, "a")
        self.total, self.every, self.quiet = total, every, quiet
        self.start: tuple[float, int] | None = None  # (time, step) of this process's first step: the ETA's base

    def step(self, rec: dict) -> None:
        self.write(rec)
        if self.start is None:
            self.start = (time.monotonic(), rec["step"] - 1)
        if not self.quiet and (rec["step"] % self.every == 0 or rec["step"] == self.total):
            t0, s0 = self.start
            left = (time.monotonic() - t0) / max(rec["step"] - s0, 1) * (self.total - rec["step"])
            print(f"[{rec['phase']}] step {rec['step']}/{self.total} | loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | "
                  f"{rec['tokens']:,} tokens | {rec['tokens_per_s']:,.0f} tok/s | ETA {format_seconds(left)}",
                  file=sys.stderr, flush=True)

    def eval(self, rec: dict) -> None:
        self.write(rec)
        if not self.quiet:
            parts = " ".join(f"{k} {v:.3f}" for k, v in rec["val"].items())
            print(f"[{rec['phase']}] step {rec['step']} | val loss {rec['val_loss']:.4f} ({parts})",
                  file=sys.stderr, flush=True)

    def write(self, rec: dict) -> None:
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def train(cfg: TrainConfig, phase: str = "pretrain", init_from: Path | None = None, resume: bool = False,
          overwrite: bool = False, quiet: bool = False) -> dict:
    """Run (or resume) one phase; returns the summary also written to summary.json."""
    out = Path(cfg.output_dir)
    anneal = phase == "anneal"
    if anneal and not cfg.anneal.mixture:
        raise TrainError("anneal.mixture: empty - say which data to anneal on (e.g. the run's anneal blend)")
    if anneal and init_from is None:
        raise TrainError("annealing needs --from CHECKPOINT (a pretraining checkpoint folder)")
    identity = {"phase": phase, "hash": cfg.hash(), "init_from": str(init_from) if init_from else None,
                "config": cfg.to_dict()}
    resume_from = _prepare_folder(out, identity, resume, overwrite)
    _quiet_transformers()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device, amp = pick_device(cfg)
    steps = cfg.anneal.steps if anneal else cfg.steps
    mixture = cfg.anneal.mixture if anneal else cfg.data.mixture
    seq_len = cfg.data.seq_len

    base = resume_from or init_from
    model = load_model(base, device) if base else build_model(zamba2_config(cfg.model, cfg.model_presets),
                                                              cfg.seed).to(device)
    if seq_len > model.config.max_position_embeddings:
        raise TrainError(f"data.seq_len {seq_len} exceeds the model's max_position_embeddings "
                         f"{model.config.max_position_embeddings}")
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr,
                                  betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps)
    start = 0
    if base:
        state = torch.load(Path(base) / "state.pt", weights_only=False) if (Path(base) / "state.pt").exists() else None
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])  # annealing continues the pretraining moments too
        if resume_from is not None:
            start = state["step"]
            _set_rng_state(state["rng"])
    metrics_path = out / "metrics.jsonl"
    _truncate_metrics(metrics_path, start)

    sources = mixture_sources(mixture)
    try:
        add_bos = trained_add_bos([e.run for e in mixture])
    except ValueError as e:
        raise TrainError(f"{'anneal.mixture' if anneal else 'data.mixture'}: {e}") from None
    stream = PackedSequences(sources, seq_len, cfg.data.seed, steps * cfg.global_batch)
    val_sets = validation_sets(Path(cfg.data.val_run), seq_len, cfg.data.val_sequences)
    n_params = count_parameters(model)
    log = Log(metrics_path, steps, cfg.log_every, quiet)
    tokens_per_step = cfg.global_batch * seq_len
    meta = {"phase": phase, "config_hash": cfg.hash()}
    if not quiet:
        print(f"[{phase}] {cfg.model}: {n_params / 1e6:.2f} M parameters on {device}"
              f"{' (bf16 autocast)' if amp else ''} | {len(sources)} shards | steps {start}->{steps} | "
              f"{tokens_per_step:,} tokens/step", file=sys.stderr, flush=True)

    def lr_at(s: int) -> float:
        return anneal_lr(s, cfg.optim.lr, cfg.anneal) if anneal else \
            pretrain_lr(s, steps, cfg.optim.lr, cfg.schedule, cfg.optim.min_lr_ratio)

    t_start = time.perf_counter()
    step = start
    try:
        while step < steps:
            t0 = time.perf_counter()
            lr = lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for micro in range(cfg.grad_accum):
                first = (step * cfg.grad_accum + micro) * cfg.micro_batch
                batch = torch.from_numpy(stream.batch(first, cfg.micro_batch)).to(device)
                loss = sequence_loss(model, batch, amp)
                (loss / cfg.grad_accum).backward()
                loss_sum += loss.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip).item()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            dt = time.perf_counter() - t0
            log.step({"phase": phase, "step": step, "tokens": step * tokens_per_step,
                      "loss": loss_sum / cfg.grad_accum, "lr": lr, "grad_norm": grad_norm,
                      "tokens_per_s": tokens_per_step / dt})
            if step % cfg.eval_every == 0 or step == steps:
                val = evaluate(model, val_sets, cfg.micro_batch, device, amp)
                log.eval({"phase": phase, "step": step, "tokens": step * tokens_per_step,
                          "val_loss": float(np.mean(list(val.values()))), "val": val})
            if step % cfg.checkpoint_every == 0 or step == steps:
                save_checkpoint(out, step, model, optimizer, meta, cfg.keep_checkpoints, add_bos)
    finally:
        log.close()
    wall = time.perf_counter() - t_start
    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    last_val = [r for r in records if "val_loss" in r][-1]
    train_recs = [r for r in records if "loss" in r]
    summary = {
        "phase": phase, "model": cfg.model, "parameters": n_params, "steps": steps, "finished": True,
        "tokens": steps * tokens_per_step, "final_loss": train_recs[-1]["loss"],
        "val_loss": last_val["val_loss"], "val": last_val["val"],
        "unigram_entropy": unigram_entropy([s.dataset for s in sources], VOCAB_SIZE),
        "tokens_per_s": float(np.median([r["tokens_per_s"] for r in train_recs])),
        "flops_per_token": flops_per_token(model.config, n_params, seq_len),
        "wall_s_this_process": round(wall, 2), "device": str(device),
        "checkpoint": str(latest_checkpoint(out)), "init_from": str(init_from) if init_from else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_training(records, out / "loss.png", title=f"{cfg.run_name} ({phase}, {cfg.model})",
                  baseline=summary["unigram_entropy"])
    if not quiet:
        print(f"[{phase}] done: val loss {summary['val_loss']:.4f} "
              f"(unigram entropy {summary['unigram_entropy']:.4f}) | "
              f"checkpoint {summary['checkpoint']}", file=sys.stderr, flush=True)
    return summary

