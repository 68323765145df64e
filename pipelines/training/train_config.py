"""Training and annealing configuration: YAML -> typed dataclasses, as strict as the pipeline's.

Same loader rules as `pipelines.core.config` (unknown keys and wrong types fail on load, `base:`
inheritance, `${VAR:-default}`, `--set key=value`); relative paths resolve against the YAML's folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipelines.core.config import ConfigError, _build, read_config_data
from pipelines.training.presets import PRESETS, load_presets


@dataclass
class MixtureEntry:
    run: str  # a pipeline run folder (holds shards/)
    blend: str | None = None  # a blend file of that run: pretrain | anneal
    component: str | None = None  # or one component's shards (e.g. fwe3), of split `split`
    split: str = "train"  # train | anneal
    weight: float = 1.0


@dataclass
class DataConfig:
    mixture: list[MixtureEntry] = field(default_factory=list)
    seq_len: int = 256
    seed: int = 1234  # document order and sample blending
    val_run: str | None = None  # run whose per-component val shards measure validation loss (default: first entry's)
    val_sequences: int = 32  # per component, fixed at every evaluation


@dataclass
class OptimConfig:
    lr: float = 3e-3  # peak
    min_lr_ratio: float = 0.1  # end of cosine / WSD decay, as a fraction of peak
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # on matrices only (not norms, biases, SSM A/D/dt)
    grad_clip: float = 1.0


@dataclass
class ScheduleConfig:
    kind: str = "cosine"  # cosine | wsd (warmup-stable-decay)
    warmup_steps: int = 20
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly


@dataclass
class AnnealConfig:
    mixture: list[MixtureEntry] = field(default_factory=list)
    steps: int = 50
    rewarm_fraction: float = 0.75  # LR climbs back to this fraction of peak...
    rewarm_steps: int = 5
    decay: str = "linear"  # ...then decays to 0 over the remaining steps: linear | cosine


@dataclass
class TrainConfig:
    run_name: str = "zamba2"
    output_dir: str = "runs/train"
    model: str = "tiny"  # a preset in `model_presets`
    model_presets: str = str(PRESETS)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    anneal: AnnealConfig = field(default_factory=AnnealConfig)
    steps: int = 200  # optimizer steps
    micro_batch: int = 8  # sequences per forward/backward
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_every: int = 50
    checkpoint_every: int = 50
    keep_checkpoints: int = 2  # older step checkpoints are deleted (the final one always stays)
    log_every: int = 10
    seed: int = 0  # weight initialisation
    device: str = "auto"  # auto (CUDA if available) | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    threads: int | None = None  # torch CPU threads; fixed for bit-exact resume (None: torch's default)

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """What the trained weights depend on (not where they go, how often they are saved or logged)."""
        data = {k: v for k, v in self.to_dict().items()
                if k not in ("output_dir", "run_name", "checkpoint_every", "keep_checkpoints", "log_every")}
        return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


def _resolve(path: str, base: Path) -> str:
    return str((base / path).resolve())


def _validate_mixture(entries: list[MixtureEntry], key: str, base: Path, check_runs: bool = True) -> None:
    """Resolve and check mixture entries; `check_runs=False` skips the shards/ check for a section
    this command may not use (pretraining must not need the anneal data to exist yet)."""
    for i, e in enumerate(entries):
        k = f"{key}[{i}]"
        e.run = _resolve(e.run, base)
        if (e.blend is None) == (e.component is None):
            raise ConfigError(f"{k}: give exactly one of blend or component")
        if e.split not in ("train", "anneal"):
            raise ConfigError(f"{k}.split: {e.split!r} is not one of train, anneal")
        if e.weight <= 0:
            raise ConfigError(f"{k}.weight: must be > 0, got {e.weight}")
        if check_runs and not (Path(e.run) / "shards").is_dir():
            raise ConfigError(f"{k}.run: no shards/ in {e.run} (run the pipeline first: zyda2.py run ...)")


def validate(cfg: TrainConfig, base: Path) -> TrainConfig:
    cfg.output_dir = _resolve(cfg.output_dir, base)
    cfg.model_presets = _resolve(cfg.model_presets, base)
    if cfg.model not in load_presets(Path(cfg.model_presets)):
        raise ConfigError(f"model: unknown preset {cfg.model!r} (see {cfg.model_presets})")
    if not cfg.data.mixture:
        raise ConfigError("data.mixture: at least one entry is needed")
    _validate_mixture(cfg.data.mixture, "data.mixture", base)
    _validate_mixture(cfg.anneal.mixture, "anneal.mixture", base, check_runs=False)
    cfg.data.val_run = _resolve(cfg.data.val_run, base) if cfg.data.val_run else cfg.data.mixture[0].run
    for key, value, allowed in (("schedule.kind", cfg.schedule.kind, ("cosine", "wsd")),
                                ("anneal.decay", cfg.anneal.decay, ("linear", "cosine")),
                                ("device", cfg.device, ("auto", "cpu", "cuda")),
                                ("precision", cfg.precision, ("auto", "fp32", "bf16"))):
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    for key, value in (("steps", cfg.steps), ("micro_batch", cfg.micro_batch), ("grad_accum", cfg.grad_accum),
                       ("data.seq_len", cfg.data.seq_len), ("eval_every", cfg.eval_every),
                       ("checkpoint_every", cfg.checkpoint_every), ("log_every", cfg.log_every),
                       ("anneal.steps", cfg.anneal.steps), ("optim.lr", cfg.optim.lr)):
        if value <= 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    if not 0 < cfg.anneal.rewarm_fraction <= 1:
        raise ConfigError(f"anneal.rewarm_fraction: must be in (0, 1], got {cfg.anneal.rewarm_fraction}")
    if cfg.anneal.rewarm_steps >= cfg.anneal.steps:
        raise ConfigError("anneal.rewarm_steps: must be fewer than anneal.steps")
    if cfg.schedule.warmup_steps >= cfg.steps:
        raise ConfigError(f"schedule.warmup_steps: must be fewer than steps ({cfg.schedule.warmup_steps} >= "
                          f"{cfg.steps}); lower it with --set schedule.warmup_steps=N or raise --set steps=N")
    return cfg


def load_train_config(path: str | Path, overrides: list[str] = (), output_dir: str | None = None) -> TrainConfig:
    data = read_config_data(path, overrides, output_dir)
    return validate(_build(TrainConfig, data, ""), Path(path).resolve().parent)

