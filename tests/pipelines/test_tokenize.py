"""Mistral tokenization and the shards: exact ids, Megatron format round trip, splits, mixtures, Hub layout."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.core.schema import read_folder
from pipelines.core.sources import COMPONENTS
from pipelines.tokens.indexed import write_indexed
from pipelines.tokens.indexed_dataset import IndexedDataset
from pipelines.tokens.shards import plan_shards
from pipelines.tokens.tokenizer import BOS, EOS, decode, encode, model_path
from pipelines.training.token_stream import blend, mixture_sources
from pipelines.training.train_config import MixtureEntry

ADVERSARIAL = ["", " ", "  two leading", "trailing   ", "a\n\nb\t\tc\r\n", "\u00a0nbsp\u2003em", "emoji 🎉🎉 𝄞",
               "12345 3.14159 1e-9", "日本語のテキスト", "\x00\x01\x7f control", "▁ and <s> </s> <unk> as text",
               " " * 40, "\n" * 5, "é vs e\u0301", "x" * 3000, "\ufffd\ud7ff"]


def test_the_tokenizer_is_mistral_v01():
    assert hashlib.md5(model_path().read_bytes()).hexdigest() == "37974873eb68a7ab30c4912fc36264ae"
    assert encode(["Hello world"], append_eos=False) == [[22557, 1526]]
    assert encode(["Hello world"], add_bos=True) == [[BOS, 22557, 1526, EOS]]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_adversarial_strings_round_trip_and_match_sentencepiece(text):
    import sentencepiece as spm
    reference = spm.SentencePieceProcessor(model_file=str(model_path()))
    ids = encode([text], append_eos=False)[0]
    assert ids == reference.encode(text)                      # byte fallback: no <unk>, ever
    assert 0 not in ids and all(0 <= i < 32000 for i in ids)
    assert decode(ids) == text.replace("\u2581", " ")          # lossless but for SentencePiece's own space mark


def test_shards_hold_exactly_the_tokens_of_every_kept_document(local_run):
    """Every kept document's ids (+EOS) appear in its component's train or val shard, in order."""
    out, report = local_run
    for source, component in COMPONENTS.items():
        tok = pq.read_table(sorted((out / "tokenize" / source).glob("*.parquet"))).to_pandas()
        # ids equal a fresh encoding of the documents the last stage kept
        where = {"dclm": "dedup"}.get(source, "quality_filter")
        docs = read_folder(out / where / source).to_pandas()
        assert list(docs["nemo_id"]) == list(tok["nemo_id"])
        fresh = encode(list(docs["text"]))
        assert all(list(a) == b for a, b in zip(tok["tokens"], fresh))
        train = [IndexedDataset(p.with_suffix(""))
                 for p in sorted((out / "shards" / component / "train").glob("*.idx"))]
        got = [list(d[i]) for d in train for i in range(len(d))]
        want = [list(t) for t, s in zip(tok["tokens"], tok["split"]) if s == "train"]
        assert got == want                                        # no validation document in training
        val = IndexedDataset(out / "shards" / component / "val" / "part_00000")
        assert [list(val[i]) for i in range(len(val))] == [list(t) for t, s in zip(tok["tokens"], tok["split"])
                                                          if s == "val"]
        assert 0 < len(val) < len(got) and all(x[-1] == EOS for x in got)
        comp = report["details"]["shards"]["components"][component]
        assert comp["train_tokens"] == sum(map(len, got)) and comp["val_tokens"] == val.n_tokens
    assert len(list((out / "shards" / "fwe3" / "train").glob("*.idx"))) >= 2   # several shards planned


def test_megatron_index_format_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, 100)
    tokens = rng.integers(0, 32000, int(lengths.sum())).astype(np.uint16)
    write_indexed(tmp_path / "shard", tokens, lengths)
    raw = (tmp_path / "shard.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<QBQQ", raw[9:34]) == (1, 8, 100, 101)
    assert len(raw) == 34 + 100 * 4 + 100 * 8 + 101 * 8
    ds = IndexedDataset(tmp_path / "shard")
    assert len(ds) == 100 and ds.n_tokens == lengths.sum() and list(ds.doc_idx) == list(range(101))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(100):
        assert np.array_equal(ds[i], tokens[starts[i]: starts[i + 1]])
    assert (tmp_path / "shard.bin").stat().st_size == 2 * lengths.sum()


def test_shard_plan_cuts_at_partition_boundaries():
    assert plan_shards([5, 5, 5, 5, 5], 10) == [[0, 1], [2, 3], [4]]
    assert plan_shards([30, 1, 1], 10) == [[0], [1, 2]]
    assert plan_shards([], 10) == []


def test_mixture_proportions_match_weights(local_run):
    out, report = local_run
    for name in ("pretrain", "anneal"):
        sources = mixture_sources([MixtureEntry(run=str(out), blend=name)])
        weights = np.array([s.weight for s in sources])
        assert abs(weights.sum() - 1) < 1e-9
        for n in (1, 7, 20_000):  # greedy blending: every prefix within one sample of the weights
            picks, local = blend(list(weights), n)
            counts = np.bincount(picks, minlength=len(weights))
            assert np.abs(counts - weights * n).max() <= 1
        assert all((local[picks == k] == np.arange(c)).all() for k, c in enumerate(counts))
    pre = report["details"]["shards"]["mixtures"]["pretrain"]["shares"]
    total = 4.0 + 4.0 + 0.16 + 0.24
    assert pre["fwe3"] == pytest.approx(4.0 / total, abs=1e-6)
    assert pre["zyda_crossdeduped-filtered"] == pytest.approx(0.16 / total, abs=1e-6)
    anneal = report["details"]["shards"]["mixtures"]["anneal"]["shares"]
    assert sum(v for k, v in anneal.items() if k.endswith(":replay")) == pytest.approx(0.6, abs=1e-6)
    megatron = (out / "shards" / "blends" / "pretrain.txt").read_text().split()
    pretrain = json.loads((out / "shards" / "blends" / "pretrain.json").read_text())["shards"]
    assert len(megatron) == 2 * len(pretrain) and megatron[1] == f"{out.resolve()}/{pretrain[0]['path']}"


def test_anneal_set_is_higher_quality(local_run):
    out, _ = local_run
    tok = pq.read_table(sorted((out / "tokenize" / "fwe").glob("*.parquet"))).to_pandas()
    docs = read_folder(out / "quality_filter" / "fwe").to_pandas()
    merged = tok.merge(docs[["nemo_id", "int_score"]], on="nemo_id")
    assert (merged.loc[merged["anneal"], "int_score"] >= 4).all()
    assert ((merged["int_score"] >= 4) & (merged["split"] == "train") == merged["anneal"]).all()


def test_hub_layout_parquet(local_run):
    out, report = local_run
    files = sorted((out / "publish" / "data").rglob("*.parquet"))
    assert {f.relative_to(out / "publish" / "data").parts[0] for f in files} == set(COMPONENTS.values())
    assert all(f.name.startswith("part.") and len(f.relative_to(out / "publish" / "data").parts) == 3 for f in files)
    table = pq.read_table(files)
    assert table.num_rows == report["totals"]["kept"]
    assert {"nemo_id", "text", "metadata", "quality_pred", "quality_prob", "int_score"} <= set(table.column_names)
    fwe = pq.read_table(sorted((out / "publish" / "data" / "fwe3").rglob("*.parquet")))
    assert set(f.parent.name for f in (out / "publish" / "data" / "fwe3").rglob("*.parquet")) == \
        {"CC-MAIN-2023-50", "CC-MAIN-2024-10"} and fwe.num_rows > 0
    assert json.loads(table.column("metadata")[0].as_py()) is not None
