"""Annealing ablations: does a dataset help? (Blakeney et al., "Does your data spark joy?")

From one partly trained checkpoint, anneal on each candidate dataset mixed with replay of the
pretraining mix (same token budget, same LR shape), repeat over seeds, evaluate every result, and
compare each candidate with the baseline. This module holds the ablation's config, the anneal
mixtures, the statistics and the outputs (table, CSV, chart, manifest); `zyda2.py ablate`
(`pipelines/cli/ablate.py`) runs each (candidate, seed) anneal-and-evaluate as one Ray task, so a
cluster runs them side by side (one GPU each where there are GPUs); a finished one is skipped when
the command is run again.

Statistics: per metric, mean and standard error over seeds; the difference to the baseline is
tested per item, paired (the same question answered by both models): the per-item differences
(averaged over seeds) are sign-flipped at random 10,000 times (seeded) to get a two-sided p-value.
With a few hundred items this resolves differences that seed-level tests with 2-3 seeds cannot.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.core.config import ConfigError, RayConfig, _build, read_config_data
from pipelines.core.provenance import git_commit
from pipelines.training import TrainError
from pipelines.training.train_config import MixtureEntry, _validate_mixture, load_train_config


@dataclass
class ReplayConfig:
    fraction: float = 0.6  # share of the anneal mix that replays pretraining data (Zyphra: 50-70%)
    mixture: list[MixtureEntry] = field(default_factory=list)


@dataclass
class EvalConfig:
    eval_dir: str = "${ZYDA2_DATA:-../../shared/data}/eval"
    tasks: list[str] = field(default_factory=lambda: ["arc_easy", "arc_challenge", "piqa", "winogrande",
                                                       "openbookqa", "hellaswag"])
    limit: int | None = None  # items per task (None: all)
    batch_size: int = 16
    bpb_sequences: int = 32  # per component's val shard


@dataclass
class AblationConfig:
    train_config: str  # the training YAML: model, optimizer, seq_len, anneal schedule (steps, rewarm)
    base_checkpoint: str  # the partly trained model every candidate starts from
    output_dir: str = "runs/ablate"
    baseline: str = ""  # the candidate the others are compared with
    candidates: dict[str, list[MixtureEntry]] = field(default_factory=dict)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    train_overrides: list[str] = field(default_factory=list)  # --set items applied to the training YAML
    eval: EvalConfig = field(default_factory=EvalConfig)
    cpus_per_run: float = 1.0  # Ray resources of one anneal-and-evaluate task (and its torch threads)
    gpus_per_run: float = 0.0
    ray: RayConfig = field(default_factory=RayConfig)
    permutations: int = 10_000
    alpha: float = 0.05


def load_ablation_config(path: str | Path, overrides: list[str] = (), output_dir: str | None = None) -> AblationConfig:
    cfg = _build(AblationConfig, read_config_data(path, overrides, output_dir), "")
    base = Path(path).resolve().parent
    cfg.train_config = str((base / cfg.train_config).resolve())
    cfg.base_checkpoint = str((base / cfg.base_checkpoint).resolve())
    cfg.output_dir = str((base / cfg.output_dir).resolve())
    cfg.eval.eval_dir = str((base / cfg.eval.eval_dir).resolve())
    if not cfg.candidates:
        raise ConfigError("candidates: at least one candidate dataset is needed")
    if cfg.baseline not in cfg.candidates:
        raise ConfigError(f"baseline: {cfg.baseline!r} is not one of the candidates ({', '.join(cfg.candidates)})")
    for name, entries in cfg.candidates.items():
        if not entries:
            raise ConfigError(f"candidates.{name}: empty mixture")
        _validate_mixture(entries, f"candidates.{name}", base)
    _validate_mixture(cfg.replay.mixture, "replay.mixture", base)
    if not 0 <= cfg.replay.fraction < 1 or (cfg.replay.fraction > 0 and not cfg.replay.mixture):
        raise ConfigError("replay: fraction must be in [0, 1), and a replay mixture is needed when it is > 0")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds: need distinct seeds, got {cfg.seeds}")
    if not (Path(cfg.base_checkpoint) / "model" / "config.json").is_file():
        raise ConfigError(f"base_checkpoint: not a checkpoint folder: {cfg.base_checkpoint} "
                          "(pretrain one with `zyda2.py train ...`)")
    missing = [t for t in cfg.eval.tasks if not (Path(cfg.eval.eval_dir) / f"{t}.jsonl").is_file()]
    if missing:
        raise ConfigError(f"eval.tasks: no {missing[0]}.jsonl in {cfg.eval.eval_dir}")
    return cfg


def anneal_mixture(cfg: AblationConfig, candidate: str) -> list[MixtureEntry]:
    """The candidate's data at (1 - replay) of the mix, the pretraining replay at `replay.fraction`."""
    own = cfg.candidates[candidate]
    total = sum(e.weight for e in own)
    mix = [dataclasses.replace(e, weight=(1 - cfg.replay.fraction) * e.weight / total) for e in own]
    if cfg.replay.fraction > 0:
        rtotal = sum(e.weight for e in cfg.replay.mixture)
        mix += [dataclasses.replace(e, weight=cfg.replay.fraction * e.weight / rtotal) for e in cfg.replay.mixture]
    return mix


def paired_permutation_p(diffs: list[np.ndarray], permutations: int, seed: int = 0) -> float:
    """Two-sided p-value of mean over tasks of the mean per-item difference, under random sign flips."""
    rng = np.random.default_rng(seed)
    observed = np.mean([d.mean() for d in diffs])
    stats = np.zeros(permutations)
    for d in diffs:
        signs = rng.integers(0, 2, size=(permutations, len(d)), dtype=np.int8) * 2 - 1
        stats += (signs * d).mean(axis=1)
    stats /= len(diffs)
    return float((np.sum(np.abs(stats) >= abs(observed) - 1e-12) + 1) / (permutations + 1))


def _metric(task_result: dict) -> str:
    return "acc_norm" if "acc_norm" in task_result else "acc"


def _mean_se(values: list[float]) -> tuple[float, float]:
    v = np.array(values, float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def compare(results: dict[str, list[dict]], baseline: str, permutations: int, alpha: float) -> list[dict]:
    """Rows of the comparison: per candidate and metric, mean/stderr over seeds, delta and paired test."""
    rows = []
    tasks = list(results[baseline][0]["tasks"])

    def per_item(cand: str, task: str) -> np.ndarray:
        runs = results[cand]
        ids = runs[0]["tasks"][task]["items"]["id"]
        for r in runs:
            if r["tasks"][task]["items"]["id"] != ids:
                raise TrainError(f"{cand}/{task}: evaluated items differ between seeds")
        m = _metric(runs[0]["tasks"][task])
        return np.mean([r["tasks"][task]["items"][m] for r in runs], axis=0)

    for cand, runs in results.items():
        for task in tasks + ["aggregate"]:
            if task == "aggregate":
                vals = [r["aggregate"]["score"] for r in runs]
                metric = "score"
            else:
                metric = _metric(runs[0]["tasks"][task])
                vals = [r["tasks"][task][metric] for r in runs]
            mean, se = _mean_se(vals)
            row = {"candidate": cand, "metric": task, "measure": metric, "mean": mean, "stderr": se,
                   "seeds": len(runs), "delta": None, "p_value": None, "significant": None}
            if cand != baseline:
                base_mean = _mean_se([r["aggregate"]["score"] if task == "aggregate" else
                                      r["tasks"][task][metric] for r in results[baseline]])[0]
                these = tasks if task == "aggregate" else [task]
                diffs = [per_item(cand, t) - per_item(baseline, t) for t in these]
                p = paired_permutation_p(diffs, permutations)
                row.update(delta=mean - base_mean, p_value=p, significant=p < alpha)
            rows.append(row)
        for comp in runs[0].get("bpb", {}):
            mean, se = _mean_se([r["bpb"][comp]["bpb"] for r in runs])
            rows.append({"candidate": cand, "metric": f"bpb:{comp}", "measure": "bits/byte", "mean": mean,
                         "stderr": se, "seeds": len(runs), "delta": None, "p_value": None, "significant": None})
    return rows


def write_table(rows: list[dict], out: Path, baseline: str) -> None:
    with open(out / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in r.items()})
    cands = list(dict.fromkeys(r["candidate"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    cell = {(r["candidate"], r["metric"]): r for r in rows}
    buf = io.StringIO()
    buf.write(f"Mean ± standard error over seeds; Δ vs `{baseline}` with a paired sign-flip permutation test "
              "over items (* p < 0.05). Tasks: acc_norm (acc where undefined); bpb: lower is better.\n\n")
    buf.write("| candidate | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics) + "\n")
    for c in cands:
        cells = []
        for m in metrics:
            r = cell.get((c, m))
            if r is None:
                cells.append("")
                continue
            scale = 1 if m.startswith("bpb:") else 100
            text = f"{r['mean'] * scale:.2f} ± {r['stderr'] * scale:.2f}" if r["stderr"] == r["stderr"] \
                else f"{r['mean'] * scale:.2f}"
            if r["delta"] is not None:
                text += f" (Δ {r['delta'] * scale:+.2f}, p={r['p_value']:.3f}{'*' if r['significant'] else ''})"
            cells.append(text)
        buf.write(f"| {c} | " + " | ".join(cells) + " |\n")
    (out / "comparison.md").write_text(buf.getvalue())


def plot_comparison(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in rows if not r["metric"].startswith("bpb:") and r["candidate"] != "(base)"]
    cands = list(dict.fromkeys(r["candidate"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    cell = {(r["candidate"], r["metric"]): r for r in rows}
    width = 0.8 / len(cands)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(metrics) * max(1, len(cands) / 2)), 4.5), dpi=100)
    for k, c in enumerate(cands):
        x = np.arange(len(metrics)) + (k - (len(cands) - 1) / 2) * width
        means = [100 * cell[(c, m)]["mean"] for m in metrics]
        errs = [100 * np.nan_to_num(cell[(c, m)]["stderr"]) for m in metrics]
        bars = ax.bar(x, means, width, yerr=errs, capsize=3, label=c)
        for b, m in zip(bars, metrics):
            if cell[(c, m)]["significant"]:
                ax.annotate("*", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom")
    ax.set_xticks(np.arange(len(metrics)), metrics, rotation=20)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(cfg: AblationConfig, results: dict) -> dict:
    import torch
    import transformers
    tcfg = load_train_config(cfg.train_config, cfg.train_overrides)
    return {
        "command": " ".join(sys.argv), "config": dataclasses.asdict(cfg),
        "train_config": tcfg.to_dict(), "train_config_hash": tcfg.hash(),
        "base_checkpoint_sha256": _sha256(Path(cfg.base_checkpoint) / "model" / "model.safetensors"),
        "anneal_mixtures": {c: [dataclasses.asdict(e) for e in anneal_mixture(cfg, c)] for c in cfg.candidates},
        "git_commit": git_commit(), "python": platform.python_version(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__},
        "runs": {c: [{"seed": r["seed"], "aggregate": r["aggregate"]["score"]} for r in rs]
                 for c, rs in results.items()},
    }


def write_comparison(cfg: AblationConfig, results: dict[str, list[dict]]) -> list[dict]:
    """Compare finished runs (`results`: the evaluations by candidate, "(base)" for the base checkpoint)
    and write comparison.csv, comparison.md, comparison.png and manifest.json; returns the rows."""
    out = Path(cfg.output_dir)
    ordered = {"(base)": results["(base)"]}
    ordered.update({c: sorted(results[c], key=lambda r: r["seed"]) for c in cfg.candidates})
    rows = compare(ordered, cfg.baseline, cfg.permutations, cfg.alpha)
    write_table(rows, out, cfg.baseline)
    plot_comparison(rows, out / "comparison.png", f"Annealing ablation ({len(cfg.seeds)} seeds)")
    (out / "manifest.json").write_text(json.dumps(_manifest(cfg, ordered), indent=2, default=str) + "\n")
    return rows
