"""Shared fixtures: the shared data folder, one Ray instance for the whole session, and runs.

The data folder is `../shared/data` relative to the repo root unless ZYDA2_DATA points elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ZYDA2_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "sources").is_dir():
        pytest.fail(f"shared test data not found at {DATA}; set ZYDA2_DATA to the shared/data folder")
    return DATA


QUALITY_MODEL = REPO / "runs" / "models" / "quality-fasttext.ftz"  # what configs/local.yaml points at


@pytest.fixture(scope="session", autouse=True)
def quality_model(data_dir) -> Path:
    """The fastText model the local recipe uses, trained on the shared labels as `make demo` does."""
    if not QUALITY_MODEL.exists():
        from filters.quality import read_labels, train_fasttext
        train_fasttext(read_labels(data_dir / "quality" / "labels.jsonl"), QUALITY_MODEL, seed=0)
    return QUALITY_MODEL


@pytest.fixture(scope="session")
def ray_instance():
    """One local Ray instance for every test that needs it; shut down (all its processes) at the end."""
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run_local(out: Path, input_dir: Path | None = None, overrides: list[str] = (), **kwargs) -> dict:
    """Run the local recipe into `out` (on the session Ray instance) and return the report."""
    from pipelines.core.config import load_config
    from pipelines.core.run import run_pipeline
    from pipelines.pipeline import PIPELINE
    cfg = load_config(REPO / "configs" / "local.yaml", list(overrides),
                      input_dir=str(input_dir) if input_dir else None, output_dir=str(out))
    return run_pipeline(PIPELINE, cfg, quiet=True, **kwargs)


@pytest.fixture(scope="session")
def local_run(ray_instance, data_dir, tmp_path_factory) -> tuple[Path, dict]:
    """The whole pipeline once over the shared fixtures: (run folder, report)."""
    out = tmp_path_factory.mktemp("local_run")
    return out, run_local(out, data_dir / "sources")


def files_digest(root: Path) -> dict[str, bytes]:
    """Every output file's bytes, except what holds timestamps and timings: the manifest, logs/ and
    the `seconds` of completion markers (the rest of each marker is compared). The run's own absolute
    path (in the Megatron blend files) reads as `<run>`, so runs in two folders compare."""
    import json
    prefix = str(root.resolve()).encode()
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or rel == "manifest.json" or rel.startswith("logs/"):
            continue
        data = p.read_bytes()
        if p.parent.name == "_done":
            marker = json.loads(data)
            marker.pop("seconds", None)
            data = json.dumps(marker, sort_keys=True).encode()
        out[rel] = data.replace(prefix, b"<run>")
    return out


@pytest.fixture(scope="session")
def pretrained_tiny(local_run, tmp_path_factory):
    """The `tiny` Zamba2 pretrained for 150 steps on the local run's pretrain blend: (config, summary)."""
    from pipelines.training.train_config import load_train_config
    from pipelines.training.trainer import train
    run, _ = local_run
    cfg = load_train_config(REPO / "configs" / "train-local.yaml",
                            [f"data.mixture=[{{run: '{run}', blend: pretrain}}]",
                             f"anneal.mixture=[{{run: '{run}', blend: anneal}}]", "steps=150", "eval_every=75",
                             "checkpoint_every=75", "optim.lr=5.0e-3"],
                            output_dir=str(tmp_path_factory.mktemp("pretrain")))
    return cfg, train(cfg, quiet=True)


def shard_documents(run: Path, component: str, role: str) -> list:
    """Every document (its token array) of a component's shards of one role, shard after shard."""
    from pipelines.tokens.indexed_dataset import IndexedDataset
    docs = []
    for idx in sorted((run / "shards" / component / role).glob("*.idx")):
        ds = IndexedDataset(idx.with_suffix(""))
        docs += [ds[i] for i in range(len(ds))]
    return docs


def kept_documents(run: Path, source: str):
    """The documents of `source` the run kept, as its tokenize stage read them (file order), with the
    split and anneal membership the stage's rules give them (columns `val`, `anneal`): a DataFrame."""
    import json

    import numpy as np
    import pandas as pd

    from pipelines.core.config import config_from_dict
    from pipelines.core.schema import read_docs
    from pipelines.pipeline import PIPELINE
    from pipelines.tokens.tokenize import anneal_mask, is_validation, split_keys
    cfg = config_from_dict(json.loads((run / "manifest.json").read_text())["config"])
    folder = run / PIPELINE.docs_folder(cfg, "tokenize", source) / source
    frames = []
    for path in sorted(folder.glob("*.parquet")):
        table = read_docs(path)
        keys = split_keys(table.column("nemo_id").to_pylist(), table.column("text").to_pylist(),
                          run / "dedup" / "decisions" / f"{source}__{path.name}")
        frame = table.to_pandas()
        frame["val"] = np.array([is_validation(k, cfg.shards.validation_fraction) for k in keys], bool)
        frame["anneal"] = anneal_mask(table, source, cfg.shards) & ~frame["val"].to_numpy()
        frames.append(frame)
    # the stage reads partitions in input order (by src_file), not in order of their encoded names
    frames.sort(key=lambda f: f["src_file"].iloc[0] if len(f) else "")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def shard_tokens_by_id(run: Path) -> dict:
    """nemo_id -> the tokens the run's train or val shards hold for that document."""
    from pipelines.core.sources import COMPONENTS
    tokens = {}
    for source, component in COMPONENTS.items():
        docs = kept_documents(run, source)
        if docs.empty:
            continue
        for role, side in (("train", ~docs["val"]), ("val", docs["val"])):
            ids = list(docs.loc[side, "nemo_id"])
            held = shard_documents(run, component, role)
            assert len(ids) == len(held), (component, role)
            tokens.update(zip(ids, held))
    return tokens
