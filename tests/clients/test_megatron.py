"""megatron-core opens the run's shards and blends as written, from another working directory.

The client side is megatron-core 0.16 itself: `IndexedDataset`, `get_blend_from_list` (what
Megatron-LM applies to `--data-path`/`--train-data-path`/`--valid-data-path`),
`BlendedMegatronDatasetBuilder` + `GPTDatasetConfig`, and Megatron's SentencePiece tokenizer.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, kept_documents

BLENDS = ("pretrain", "anneal", "valid")


def megatron_tokenizer():
    from megatron.core.tokenizers import MegatronTokenizer

    from pipelines.tokens.tokenizer import model_path
    return MegatronTokenizer.from_pretrained(str(model_path()), metadata_path={"library": "sentencepiece"})


def gpt_config(tmp: Path, **blends):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig
    return GPTDatasetConfig(random_seed=1234, sequence_length=64, tokenizer=megatron_tokenizer(),
                            reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
                            path_to_cache=str(tmp / "megatron-cache"), **blends)


def build(config, sizes):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset
    return BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()


def readme_megatron_flags(run: Path) -> list[list[str]]:
    """The Megatron argument lines the README shows, with RUN = `run` and $(cat FILE) expanded."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- megatron-flags -->\n```bash\n(.*?)```", text, re.S)
    assert block, "README has no megatron-flags block"
    lines = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\$\(cat (\S+)\)", lambda m: Path(m.group(1).replace("RUN", str(run))).read_text().strip(), line)
        lines.append(shlex.split(line))
    return lines


def megatron_data_args(argv: list[str]) -> argparse.Namespace:
    """The data flags as Megatron-LM's `_add_data_args` declares them (megatron/training/arguments.py)."""
    p = argparse.ArgumentParser()
    p.add_argument("--data-path", nargs="*", default=None)
    p.add_argument("--split", type=str, default=None)
    p.add_argument("--train-data-path", nargs="*", default=None)
    p.add_argument("--valid-data-path", nargs="*", default=None)
    p.add_argument("--test-data-path", nargs="*", default=None)
    return p.parse_args(argv)


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    """A one-rank gloo process group, as every Megatron launch has (its index caching asks for the rank)."""
    import torch.distributed as dist
    store = tmp_path_factory.mktemp("megatron-pg") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture()
def elsewhere(tmp_path, monkeypatch, process_group):
    """A working directory that is not the run's parent, nor the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_blend_prefix_is_absolute_and_opens_in_megatron(local_run, elsewhere):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import get_blend_from_list
    out, report = local_run
    for name in BLENDS:
        entries = json.loads((out / "shards" / "blends" / f"{name}.json").read_text())["shards"]
        prefixes, weights = get_blend_from_list((out / "shards" / "blends" / f"{name}.txt").read_text().split())
        assert len(prefixes) == len(entries) > 0
        assert weights == pytest.approx([e["weight"] for e in entries], abs=1e-9)
        for prefix, entry in zip(prefixes, entries):
            assert Path(prefix).is_absolute() and prefix == f"{out.resolve()}/{entry['path']}"
            ds = IndexedDataset(prefix)
            assert len(ds) == entry["documents"] > 0
            assert int(ds.sequence_lengths.sum()) == entry["tokens"]
            assert ds[len(ds) - 1][-1] == 2                          # every document ends in EOS
    valid = json.loads((out / "shards" / "blends" / "valid.json").read_text())["shards"]
    components = report["details"]["shards"]["components"]
    assert {e["component"] for e in valid} == {c for c, v in components.items() if v["val_documents"]}


def test_no_shard_file_is_empty_and_empty_roles_are_reported(local_run):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    out, report = local_run
    bins = sorted((out / "shards").rglob("*.bin"))
    assert bins and all(b.stat().st_size > 0 and len(IndexedDataset(str(b.with_suffix("")))) > 0 for b in bins)
    listed = set()
    for _component, v in report["details"]["shards"]["components"].items():
        for role in ("train", "anneal", "val"):
            shards = v[f"{role}_shards"]
            assert (role in v["empty_roles"]) == (not shards)
            listed |= {s["path"] for s in shards}
    assert listed == {b.relative_to(out).with_suffix("").as_posix() for b in bins}
    # the local recipe anneals only fwe, zyda and dolma-cc: dclm's anneal role is empty, in no blend
    assert "anneal" in report["details"]["shards"]["components"]["dclm_crossdeduped"]["empty_roles"]
    assert not list((out / "shards" / "dclm_crossdeduped").glob("anneal/*"))


def test_readme_megatron_flags_build_datasets_from_another_directory(local_run, elsewhere):
    """Each README line's flags, parsed as Megatron-LM declares them, build GPT datasets in megatron-core."""
    from megatron.core.datasets.utils import get_blend_from_list
    out, _ = local_run
    lines = readme_megatron_flags(out)
    assert len(lines) >= 2
    seen = set()
    for argv in lines:
        args = megatron_data_args(argv)
        if args.data_path:
            config = gpt_config(elsewhere, blend=get_blend_from_list(args.data_path), split=args.split)
            seen.add("data-path")
        else:
            config = gpt_config(elsewhere, blend_per_split=[get_blend_from_list(args.train_data_path),
                                                            get_blend_from_list(args.valid_data_path), None])
            seen.add("per-split")
        train, valid, test = build(config, [200, 20, 0])
        assert len(train) >= 200 and len(valid) >= 20 and test is None   # blends oversample by 0.5%
        for ds in (train, valid):
            for i in (0, len(ds) - 1):
                tokens = np.asarray(ds[i]["tokens"])
                assert tokens.shape == (64,) and tokens.max() < 32000
    assert seen == {"data-path", "per-split"}


def test_reroot_rewrites_blends_for_a_moved_run(local_run, elsewhere):
    """After the run folder is copied elsewhere, `zyda2.py reroot-blends` points every blend at the copy."""
    import subprocess
    import sys

    from megatron.core.datasets.utils import get_blend_from_list
    out, _ = local_run
    tmp_path = elsewhere
    moved = tmp_path / "moved-run"
    shutil.copytree(out / "shards", moved / "shards")
    subprocess.run([sys.executable, str(REPO / "zyda2.py"), "reroot-blends", str(moved)], check=True, cwd=tmp_path,
                   capture_output=True)
    for name in BLENDS:
        prefixes, _ = get_blend_from_list((moved / "shards" / "blends" / f"{name}.txt").read_text().split())
        assert all(p.startswith(f"{moved.resolve()}/shards/") for p in prefixes)
    config = gpt_config(tmp_path, blend_per_split=[
        get_blend_from_list((moved / "shards" / "blends" / "pretrain.txt").read_text().split()),
        get_blend_from_list((moved / "shards" / "blends" / "valid.txt").read_text().split()), None])
    train, valid, _ = build(config, [50, 10, 0])
    assert len(train) >= 50 and len(valid) >= 10
    # a root as the cluster sees it (need not exist here)
    subprocess.run([sys.executable, str(REPO / "zyda2.py"), "reroot-blends", str(moved), "--root", "/lustre/zyda2"],
                   check=True, cwd=tmp_path, capture_output=True)
    prefixes, _ = get_blend_from_list((moved / "shards" / "blends" / "anneal.txt").read_text().split())
    assert all(p.startswith("/lustre/zyda2/shards/") for p in prefixes)


def test_no_validation_document_appears_in_any_training_shard(local_run):
    """Read with megatron-core: no val document's token sequence is a document of any train or anneal
    shard of any component; and the run does hold identical texts under different ids (what used to
    leak), each in exactly one of the two."""
    import pandas as pd
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from pipelines.core.sources import COMPONENTS
    from pipelines.tokens.tokenizer import encode
    out, _ = local_run

    def documents(role: str) -> set[bytes]:
        docs = set()
        for idx in sorted((out / "shards").glob(f"*/{role}/*.idx")):
            ds = IndexedDataset(str(idx.with_suffix("")))
            docs |= {np.asarray(ds[i]).tobytes() for i in range(len(ds))}
        return docs

    val, training = documents("val"), documents("train") | documents("anneal")
    assert len(val) > 0 and len(training) > 0
    assert not val & training
    docs = pd.concat([kept_documents(out, source) for source in COMPONENTS], ignore_index=True)
    repeated = docs[docs.duplicated("text", keep=False)]
    assert repeated["nemo_id"].nunique() > repeated["text"].nunique() > 0, \
        "the fixtures should hold identical texts under different nemo_ids"
    for tokens in encode(list(repeated["text"].unique())):  # each identical text in exactly one side
        held = np.asarray(tokens, np.uint16).tobytes()
        assert (held in val) != (held in training)
