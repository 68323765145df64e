"""Run configuration: YAML files that build typed dataclasses, validated on load.

Why strict: a typo in a week-long cluster run's config must fail in the first second, not
silently fall back to a default. Every key maps to a dataclass field; an unknown key, a value of
the wrong type or a local path that does not exist raises one `ConfigError` naming the key.

Two conveniences, both resolved at load time so that the dataclasses hold plain values:
- `base: other.yaml` deep-merges this file over another one (`local.yaml` is the recipe in
  `zyda2.yaml` plus local overrides), so the recipe's numbers live in one place;
- `${VAR:-default}` in a string is replaced from the environment (e.g. `ZYDA2_DATA`).
Relative local paths resolve against the directory of the file that holds the top-level config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.core.sections import (
    DedupConfig,
    HeuristicFilterConfig,
    IngestConfig,
    NetworkConfig,
    QualityFilterConfig,
    RayConfig,
    ShardsConfig,
    SourceConfig,
    TokenizeConfig,
)
from pipelines.core.sources import SOURCE_NAMES, SOURCES


class ConfigError(ValueError):
    """A configuration problem, with the offending key in the message."""


@dataclass
class Config:
    run_name: str = "zyda2"
    input_dir: str | None = None  # root that relative source paths resolve against
    output_dir: str = "runs/zyda2"
    ray: RayConfig = field(default_factory=RayConfig)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    heuristic_filter: HeuristicFilterConfig = field(default_factory=HeuristicFilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    quality_filter: QualityFilterConfig = field(default_factory=QualityFilterConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *names: str, extra: dict | None = None) -> str:
        """Hash of the named sections (and of `extra`, e.g. the parameters of a stage defined outside
        the config): what a stage's outputs depend on (used to refuse stale outputs)."""
        data = {n: dataclasses.asdict(getattr(self, n)) if dataclasses.is_dataclass(getattr(self, n))
                else _plain(getattr(self, n)) for n in names}
        return _digest({**data, **(extra or {})})

    def hash(self) -> str:
        """Hash of everything that shapes the outputs: not where they go, nor how many workers make them."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("output_dir", "ray", "run_name", "network")}
        return _digest(data)


# Settings that change speed or memory, never the bytes of an output: left out of every hash, so that
# a resumed run may change them.
TUNING_KEYS = (("tokenize", "cache_units"), ("dedup", "graph_partition_mb"))


def _digest(data: dict) -> str:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, key in TUNING_KEYS:
        if isinstance(data.get(section), dict):
            data[section].pop(key, None)
    return hashlib.sha256(yaml.safe_dump(data, sort_keys=True).encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in value.items()}
    return value


_ENV = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _expand_env(value: str, key: str) -> str:
    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise ConfigError(f"{key}: environment variable {name} is not set and has no default")
        return default
    return _ENV.sub(repl, value)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        base_path = (path.parent / base).resolve()
        data = _merge(_anchor_paths(_read_yaml(base_path, seen + (path,)), base_path.parent), data)
    return data


def _local_relative(value: Any, key: str) -> str | None:
    """`value` (env expanded) when it is a relative local path, else None."""
    if not isinstance(value, str):
        return None
    value = _expand_env(value, key)
    return None if is_url(value) or Path(value).is_absolute() else value


def _anchor_paths(data: dict, folder: Path) -> dict:
    """A `base:` file's relative paths made absolute against its own folder (not the child's):
    input_dir, output_dir, a local quality model, and source paths where no input_dir roots them."""
    data = dict(data)
    for key in ("input_dir", "output_dir"):
        if (rel := _local_relative(data.get(key), key)) is not None:
            data[key] = str((folder / rel).resolve())
    q = data.get("quality_filter")
    if isinstance(q, dict) and (rel := _local_relative(q.get("model"), "quality_filter.model")) is not None \
            and (rel.startswith(".") or q.get("backend", "deberta") == "fasttext"):
        data["quality_filter"] = {**q, "model": str((folder / rel).resolve())}
    sources = data.get("sources")
    if isinstance(sources, dict) and data.get("input_dir") is None:
        data["sources"] = {name: {**src, **{k: str((folder / rel).resolve()) for k in ("path", "files_from")
                                             if (rel := _local_relative(src.get(k), f"sources.{name}.{k}"))}}
                           if isinstance(src, dict) else src for name, src in sources.items()}
    return data


def _reroot_sources(data: dict, input_dir: str) -> None:
    """`--input DIR`: every enabled source is read from DIR. A source given as a URL is read from
    DIR/<SOURCES[name].folder> with the same include globs (a local copy keeps the repository's layout)
    and no url list; a relative local path is already under DIR. Raises ConfigError (one line) for a
    source with an absolute local path, which DIR cannot re-root."""
    for name, src in (data.get("sources") or {}).items():
        if not isinstance(src, dict) or src.get("enabled") is False or not isinstance(src.get("path"), str):
            continue
        path = _expand_env(src["path"], f"sources.{name}.path")
        if is_url(path):
            if name not in SOURCES:
                raise ConfigError(f"sources.{name}: unknown source (known: {', '.join(SOURCE_NAMES)})")
            src["path"], src["files_from"] = SOURCES[name].folder, None
        elif Path(path).is_absolute():
            raise ConfigError(f"--input {input_dir}: sources.{name}.path is the absolute path {path}, which "
                              f"--input cannot re-root; make it relative (to input_dir) or drop --input")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value (e.g. ingest.batch_docs=512)")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def _apply_override(data: dict, keys: list[str], value: Any) -> None:
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {k} is not a mapping")
    node[keys[-1]] = value


def _build(tp: Any, value: Any, key: str) -> Any:
    """Convert `value` to type `tp`, raising ConfigError that names `key` on a mismatch."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _build(non_none[0], value, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"{key + '.' if key else ''}{unknown[0]}: unknown key "
                              f"(known: {', '.join(sorted(names))})")
        kwargs = {k: _build(hints[k], v, f"{key}.{k}" if key else k) for k, v in value.items()}
        try:
            return tp(**kwargs)
        except TypeError as e:
            missing = re.findall(r"'(\w+)'", str(e))
            raise ConfigError(f"{key}.{missing[0] if missing else '?'}: required key is missing") from None
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_build(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _build(vt, v, f"{key}.{k}") for k, v in value.items()}
    if value is None:
        raise ConfigError(f"{key}: must not be null")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", value):
        return float(value)  # YAML 1.1 reads 5e-3 (no dot) as a string
    if tp is str and isinstance(value, str):
        return _expand_env(value, key)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def is_url(path: str) -> bool:
    return "://" in path


def _validate(cfg: Config, base_dir: Path) -> Config:
    if cfg.input_dir is not None and not is_url(cfg.input_dir):
        cfg.input_dir = str((base_dir / cfg.input_dir).resolve())
    if not is_url(cfg.output_dir):
        cfg.output_dir = str((base_dir / cfg.output_dir).resolve()) if not Path(cfg.output_dir).is_absolute() \
            else cfg.output_dir
    for name, src in cfg.sources.items():
        if name not in SOURCE_NAMES:
            raise ConfigError(f"sources.{name}: unknown source (known: {', '.join(SOURCE_NAMES)})")
        if not src.enabled:
            continue
        if not is_url(src.path):
            root = Path(cfg.input_dir) if cfg.input_dir and not is_url(cfg.input_dir) else base_dir
            src.path = str((root / src.path).resolve())
            if not Path(src.path).is_dir():
                if cfg.input_dir and not is_url(cfg.input_dir) and not Path(cfg.input_dir).is_dir():
                    raise ConfigError(f"--input/input_dir: folder does not exist: {cfg.input_dir}")
                raise ConfigError(f"sources.{name}.path: folder does not exist: {src.path} (an input folder holds "
                                  "dclm/, fineweb-edu/, zyda/, dolma-cc/; run without this source with --sources "
                                  f"or --set sources.{name}.enabled=false)")
    for key, names in (("dedup.source_rank", cfg.dedup.source_rank),
                       ("quality_filter.apply_to", cfg.quality_filter.apply_to),
                       ("heuristic_filter.apply_to", cfg.heuristic_filter.apply_to),
                       ("shards.pretrain_weights", list(cfg.shards.pretrain_weights)),
                       ("shards.anneal_components", cfg.shards.anneal_components)):
        bad = [n for n in names if n not in SOURCE_NAMES]
        if bad:
            raise ConfigError(f"{key}: unknown source {bad[0]!r} (known: {', '.join(SOURCE_NAMES)})")
    choices = {"dedup.shingle": (cfg.dedup.shingle, ("char", "word")),
               "dedup.mode": (cfg.dedup.mode, ("cross", "all")),
               "dedup.hash_bits": (cfg.dedup.hash_bits, (32, 64)),
               "quality_filter.backend": (cfg.quality_filter.backend, ("deberta", "fasttext"))}
    q = cfg.quality_filter
    if q.enabled and q.apply_to and q.backend == "fasttext" and not is_url(q.model):
        q.model = str((base_dir / q.model).resolve())
        if not Path(q.model).is_file():
            raise ConfigError(f"quality_filter.model: fastText model not found: {q.model} "
                              "(train one with `zyda2.py train-quality LABELS.jsonl --output MODEL`)")
    elif q.enabled and q.apply_to and q.backend == "deberta" and (q.model.startswith((".", "/"))):
        q.model = str((base_dir / q.model).resolve())
        if not Path(q.model).is_dir():
            raise ConfigError(f"quality_filter.model: DeBERTa model folder not found: {q.model}")
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}")
    if cfg.dedup.bands * cfg.dedup.rows > cfg.dedup.num_hashes:
        raise ConfigError(f"dedup.bands: bands x rows ({cfg.dedup.bands} x {cfg.dedup.rows}) "
                          f"must not exceed num_hashes ({cfg.dedup.num_hashes})")
    if cfg.dedup.verify_threshold is not None and not 0 < cfg.dedup.verify_threshold <= 1:
        raise ConfigError(f"dedup.verify_threshold: must be in (0, 1], got {cfg.dedup.verify_threshold}")
    for stage, r in cfg.ray.stage_resources.items():
        if (r.num_cpus is not None and r.num_cpus < 0) or (r.memory_mb is not None and r.memory_mb <= 0) \
                or any(v < 0 for v in r.resources.values()):
            raise ConfigError(f"ray.stage_resources.{stage}: num_cpus and resources must be >= 0, memory_mb > 0")
    for key, value in (("ingest.batch_docs", cfg.ingest.batch_docs), ("ray.task_cpus", cfg.ray.task_cpus),
                       ("dedup.partitions", cfg.dedup.partitions), ("dedup.ngram", cfg.dedup.ngram),
                       ("dedup.graph_partition_mb", cfg.dedup.graph_partition_mb),
                       ("tokenize.cache_units", cfg.tokenize.cache_units),
                       ("shards.shard_tokens", cfg.shards.shard_tokens),
                       ("shards.chars_per_token", cfg.shards.chars_per_token),
                       ("network.max_connections_per_host", cfg.network.max_connections_per_host),
                       ("network.timeout_s", cfg.network.timeout_s),
                       ("ray.task_group_mb", cfg.ray.task_group_mb),
                       ("ray.task_group_files", cfg.ray.task_group_files)):
        if value <= 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    if cfg.ray.task_group_waves < 0:
        raise ConfigError(f"ray.task_group_waves: must be >= 0, got {cfg.ray.task_group_waves}")
    for key, value in (("ingest.split_mb", cfg.ingest.split_mb), ("ingest.bundle_mb", cfg.ingest.bundle_mb)):
        if value is not None and value < 0:
            raise ConfigError(f"{key}: must be >= 0 or null, got {value}")
    if cfg.network.retries < 0 or cfg.network.backoff_s < 0 or cfg.network.max_backoff_s < 0:
        raise ConfigError("network.retries, backoff_s and max_backoff_s must be >= 0")
    return cfg


def config_from_dict(data: dict, overrides: list[str] = (), output_dir: str | None = None) -> Config:
    """Rebuild a config saved in a run's manifest.json (paths there are already absolute)."""
    data = dict(data)
    for item in overrides:
        _apply_override(data, *_parse_override(item))
    if output_dir is not None:
        data["output_dir"] = str(Path(output_dir).resolve())
    return _validate(_build(Config, data, ""), Path.cwd())


def load_config(path: str | Path, overrides: list[str] = (), input_dir: str | None = None,
                output_dir: str | None = None) -> Config:
    """Load, merge `base:` chains, apply `--set` overrides and CLI paths, then validate."""
    path = Path(path).resolve()
    data = _read_yaml(path)
    for item in overrides:
        _apply_override(data, *_parse_override(item))
    if input_dir is not None:
        if is_url(input_dir):
            raise ConfigError(f"--input {input_dir}: must be a local folder (put URLs in sources.<name>.path)")
        data["input_dir"] = str(Path(input_dir).resolve())
        _reroot_sources(data, input_dir)
    if output_dir is not None:
        data["output_dir"] = str(Path(output_dir).resolve()) if not is_url(output_dir) else output_dir
    cfg = _build(Config, data, "")
    return _validate(cfg, path.parent)


def read_config_data(path: Path, overrides: list[str] = (), output_dir: str | None = None) -> dict:
    """A YAML's merged `base:` chain with `--set` overrides and `--output` applied, not yet typed:
    the first half of every loader (pipeline, training, ablation)."""
    data = _read_yaml(Path(path).resolve())
    for item in overrides:
        _apply_override(data, *_parse_override(item))
    if output_dir is not None:
        data["output_dir"] = str(Path(output_dir).resolve())
    return data
