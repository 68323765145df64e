"""Mistral tokenization and the shards: exact ids, Megatron format round trip, splits, mixtures, Hub layout."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.core.sources import COMPONENTS
from pipelines.tokens.indexed import IndexedWriter, write_indexed
from pipelines.tokens.indexed_dataset import IndexedDataset
from pipelines.tokens.tokenize import plan_shards
from pipelines.tokens.tokenizer import BOS, EOS, decode, encode, model_path
from pipelines.training.token_stream import blend, mixture_sources, validation_shards
from pipelines.training.train_config import MixtureEntry
from tests.conftest import kept_documents, shard_documents

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
    """Every kept document's SentencePiece ids (+EOS) are in its component's train or val shards, in
    order, and the anneal set's in the anneal shards; nothing else is."""
    out, report = local_run
    for source, component in COMPONENTS.items():
        docs = kept_documents(out, source)
        fresh = encode(list(docs["text"]))  # SentencePiece itself
        val, anneal = docs["val"].to_numpy(), docs["anneal"].to_numpy()
        got = {role: [list(d) for d in shard_documents(out, component, role)] for role in ("train", "anneal", "val")}
        assert got["train"] == [t for t, v in zip(fresh, val) if not v]   # no validation document in training
        assert got["val"] == [t for t, v in zip(fresh, val) if v]
        assert got["anneal"] == [t for t, a in zip(fresh, anneal) if a]
        assert 0 < len(got["val"]) < len(got["train"]) and all(x[-1] == EOS for x in got["train"])
        comp = report["details"]["shards"]["components"][component]
        assert comp["train_tokens"] == sum(map(len, got["train"])) and comp["val_tokens"] == sum(map(len, got["val"]))
        assert comp["val_documents"] == len(got["val"])
        row = report["sources"][source]["stages"]["tokenize"]
        assert (row["docs_val"], row["docs_anneal"]) == (len(got["val"]), len(got["anneal"]))
        assert row["tokens"] == sum(map(len, fresh)) and row["tokens_anneal"] == sum(map(len, got["anneal"]))
    assert len(list((out / "shards" / "fwe3" / "train").glob("*.idx"))) >= 2   # several shards planned
    assert not list((out / "tokenize").rglob("*.parquet"))                    # and no token copy of the text


def test_one_shard_per_planned_group_holds_its_partitions(local_run):
    """Shard k of every role holds the documents of the partitions planned into it (their markers
    say which), and the plan is the characters' (`shards.chars_per_token`) before any tokenizing."""
    out, _ = local_run
    markers = [json.loads(p.read_text()) for p in sorted((out / "tokenize" / "_done").glob("*.json"))]
    shards = json.loads((out / "manifest.json").read_text())["config"]["shards"]
    for source, component in COMPONENTS.items():
        stats = sorted((m["stats"] for m in markers if m["stats"]["source"] == source), key=lambda s: s["src_file"])
        planned = plan_shards([s["chars_out"] for s in stats], shards["shard_tokens"] * shards["chars_per_token"])
        assert [[stats[i]["shard"] for i in g] for g in planned] == [[f"part_{k:05d}"] * len(g)
                                                                    for k, g in enumerate(planned)]
        for k, group in enumerate(planned):
            train = IndexedDataset(out / "shards" / component / "train" / f"part_{k:05d}")
            assert len(train) == sum(stats[i]["out"] - stats[i]["docs_val"] for i in group)
            assert train.n_tokens == sum(stats[i]["tokens"] - stats[i]["tokens_val"] for i in group)


def test_validation_reads_every_val_shard_of_a_component_as_one(local_run):
    out, report = local_run
    val = validation_shards(out)
    components = report["details"]["shards"]["components"]
    assert {c: len(ds) for c, ds in val.items()} == {c: v["val_documents"] for c, v in components.items()
                                                     if v["val_documents"]}
    assert any(len(ds.parts) > 1 for ds in val.values())  # several planned shards, several val shards
    for component, ds in val.items():
        assert [list(ds[i]) for i in range(len(ds))] == [list(d) for d in shard_documents(out, component, "val")]
        assert ds.n_tokens == components[component]["val_tokens"]


def test_an_empty_shard_is_not_written_and_replaces_an_earlier_one(tmp_path):
    write_indexed(tmp_path / "part_00000", np.array([5, 2], np.uint16), np.array([2]))
    writer = IndexedWriter(tmp_path / "part_00000")
    writer.write(np.zeros(0, np.uint16), np.zeros(0, np.int64))
    assert writer.close() == (0, 0)
    assert not list(tmp_path.iterdir())  # neither the earlier shard nor a temp file


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
    docs = kept_documents(out, "fwe")
    anneal = shard_documents(out, "fwe3", "anneal")
    assert len(anneal) == docs["anneal"].sum() > 0
    assert [list(t) for t in anneal] == encode(list(docs.loc[docs["anneal"], "text"]))
    assert (docs.loc[docs["anneal"], "int_score"] >= 4).all()
    assert ((docs["int_score"] >= 4) & ~docs["val"] == docs["anneal"]).all()


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
