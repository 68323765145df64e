"""Cross-dedup on the shared fixtures, judged against the exact char-25 Jaccard ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dedup.minhash import band_keys, candidate_probability, jaccard, shingle_set, signatures
from dedup.stage import read_signatures
from pipelines.core.config import DedupConfig
from pipelines.core.sources import INPUT_FOLDERS
from tests.conftest import run_local

SOURCE_OF_FOLDER = {v: k for k, v in INPUT_FOLDERS.items()}
RANK = {"fwe": 0, "dclm": 1, "zyda": 2, "dolma-cc": 3}


@pytest.fixture(scope="module")
def truth(data_dir):
    t = pq.read_table(data_dir / "dedup_truth.parquet").to_pandas()
    for side in "ab":
        t[f"src_{side}"] = t[f"source_{side}"].map(SOURCE_OF_FOLDER)
        t[f"key_{side}"] = list(zip(t[f"src_{side}"], t[f"file_{side}"], t[f"row_{side}"]))
    return t


@pytest.fixture(scope="module")
def decisions(local_run):
    out, _ = local_run
    d = pq.read_table(sorted((out / "dedup" / "decisions").glob("*.parquet"))).to_pandas()
    d["key"] = list(zip(d["source"], d["src_file"], d["src_row"]))
    return d.set_index("key")


@pytest.fixture(scope="module")
def docs(local_run):
    out, _ = local_run
    d = pq.read_table(sorted((out / "ingest").glob("*/*.parquet"))).to_pandas()
    d["key"] = list(zip(d["source"], d["src_file"], d["src_row"]))
    return d.set_index("key")


@pytest.fixture(scope="module")
def sigs(local_run):
    out, _ = local_run
    result = {}
    for path in sorted((out / "dedup" / "signatures" / "char25_128h_32b_seed10").glob("*/*.parquet")):
        src_files, rows, s = read_signatures(path)
        for f, r, sig in zip(src_files.to_pylist(), rows, s):
            result[(path.parent.name, f, int(r))] = sig
    return result


def test_candidate_rate_per_jaccard_bin_follows_the_s_curve(truth, sigs):
    """Direct candidates (shared band) per bin vs the theory 1-(1-J^16)^8, within 3 sigma."""
    cross = truth[truth["cross_source"]]
    a = np.stack([sigs[k] for k in cross["key_a"]])
    b = np.stack([sigs[k] for k in cross["key_b"]])
    shared = (band_keys(a, 8, 16, 10) == band_keys(b, 8, 16, 10)).any(axis=1)
    j = cross["jaccard_char25"].to_numpy()
    bins = [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.01]
    checked = 0
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (j >= lo) & (j < hi)
        if sel.sum() < 10:
            continue
        p = candidate_probability(j[sel], 8, 16)
        expected, sigma = p.mean(), np.sqrt((p * (1 - p)).sum()) / sel.sum()
        observed = shared[sel].mean()
        assert abs(observed - expected) <= 3 * sigma + 0.02, (lo, hi, observed, expected)
        checked += 1
    assert checked >= 6


def test_estimated_jaccard_agrees_with_exact_and_datasketch(truth, docs):
    from datasketch import MinHash
    cfg = DedupConfig()
    sample = truth.iloc[::4]
    ta = [docs.loc[[k], "text"].iloc[0] for k in sample["key_a"]]
    tb = [docs.loc[[k], "text"].iloc[0] for k in sample["key_b"]]
    ours = (signatures(ta, cfg) == signatures(tb, cfg)).mean(axis=1)
    exact = np.array([jaccard(shingle_set(x, cfg), shingle_set(y, cfg)) for x, y in zip(ta, tb)])
    np.testing.assert_allclose(exact, sample["jaccard_char25"], atol=1e-6)  # exact sets match the truth

    def ds(text):
        m = MinHash(num_perm=128, seed=10)
        m.update_batch([text[i:i + 25].encode() for i in range(max(1, len(text) - 24))])
        return m
    theirs = np.array([ds(x).jaccard(ds(y)) for x, y in zip(ta, tb)])
    sigma = np.sqrt(np.maximum(exact * (1 - exact), 1e-4) / 128)
    z_ours, z_theirs = (ours - exact) / sigma, (theirs - exact) / sigma
    assert np.abs(z_ours).max() < 4.5 and abs(z_ours.mean()) < 0.3
    assert abs(z_ours.std() - z_theirs.std()) < 0.3  # the same estimator quality as datasketch


def test_signatures_are_deterministic_and_seeded():
    texts = ["x" * 40, "the same text, the same signature " * 3, "é🎉 short"]
    cfg = DedupConfig()
    assert np.array_equal(signatures(texts, cfg), signatures(texts, cfg))
    assert not np.array_equal(signatures(texts, cfg), signatures(texts, DedupConfig(seed=11)))
    assert signatures(texts, DedupConfig(hash_bits=64)).dtype == np.uint64


def test_exact_cross_source_copies_are_always_removed(truth, decisions):
    exact = truth[truth["cross_source"] & (truth["jaccard_char25"] == 1.0)]
    assert len(exact) > 20
    for _, pair in exact.iterrows():
        worse = max((pair["key_a"], pair["key_b"]), key=lambda k: RANK[k[0]])
        better = min((pair["key_a"], pair["key_b"]), key=lambda k: RANK[k[0]])
        if RANK[worse[0]] == RANK[better[0]]:
            continue
        assert not decisions.loc[[worse], "keep"].iloc[0], worse
        assert decisions.loc[[worse], "cluster_id"].iloc[0] == decisions.loc[[better], "cluster_id"].iloc[0]


def test_single_source_clusters_are_untouched(truth, decisions):
    planted = pd.concat([truth[["cluster_id", "key_a"]].rename(columns={"key_a": "key"}),
                         truth[["cluster_id", "key_b"]].rename(columns={"key_b": "key"})]).drop_duplicates()
    n_sources = planted.groupby("cluster_id")["key"].agg(lambda ks: len({k[0] for k in ks}))
    single = planted[planted["cluster_id"].isin(n_sources[n_sources == 1].index)]
    assert single["cluster_id"].nunique() >= 50
    for key in single["key"]:
        if key in decisions.index:
            assert decisions.loc[[key], "keep"].iloc[0], key


def test_resolution_keeps_exactly_the_best_source(decisions):
    for cluster, group in decisions.groupby("cluster_id"):
        sources = {k[0] for k in group.index}
        best = min(sources, key=RANK.get)
        for key, row in group.iterrows():
            if len(sources) == 1:
                assert row["keep"] and row["reason"] == "single_source_cluster"
            elif key[0] == best:
                assert row["keep"] and row["reason"] == "best_source"
            else:
                assert not row["keep"] and row["reason"] == "cross_source_duplicate"
        assert len(group) >= 2 and cluster in set(group["nemo_id"])  # named after one of its members


def test_verify_threshold_removes_nothing_below_it(ray_instance, data_dir, local_run, tmp_path):
    out = tmp_path / "verified"
    report = run_local(out, data_dir / "sources", ["dedup.verify_threshold=0.85", "dedup.bands=16",
                                                   "dedup.rows=8"])
    d = pq.read_table(sorted((out / "dedup" / "decisions").glob("*.parquet"))).to_pandas()
    texts = pq.read_table(sorted((out / "ingest").glob("*/*.parquet"))).to_pandas().set_index("nemo_id")["text"]
    cfg = DedupConfig()
    sets = {i: shingle_set(texts[i], cfg) for i in d["nemo_id"]}
    assert report["details"]["dedup"]["verify"]["rejected"] > 0
    for _, group in d.groupby("cluster_id"):
        for _, row in group[~group["keep"]].iterrows():
            best = max(jaccard(sets[row["nemo_id"]], sets[other])
                       for other in group["nemo_id"] if other != row["nemo_id"])
            assert best >= 0.85, row["nemo_id"]


def test_mode_all_keeps_one_per_cluster_and_partitions_do_not_matter(ray_instance, data_dir, tmp_path):
    a, b = tmp_path / "p3", tmp_path / "p16"
    run_local(a, data_dir / "sources", ["dedup.mode=all", "dedup.partitions=3"])
    run_local(b, data_dir / "sources", ["dedup.mode=all", "dedup.partitions=16", "ray.task_cpus=1"])
    for path in sorted((a / "dedup" / "decisions").glob("*.parquet")):
        assert path.read_bytes() == (b / "dedup" / "decisions" / path.name).read_bytes()
    d = pq.read_table(sorted((a / "dedup" / "decisions").glob("*.parquet"))).to_pandas()
    for _, group in d.groupby("cluster_id"):
        kept = group[group["keep"]]
        assert len(kept) == 1 and kept["reason"].item() == "cluster_representative"
        best = min(group.itertuples(), key=lambda r: (RANK[r.source], r.nemo_id))
        assert kept["nemo_id"].item() == best.nemo_id
        assert set(group[~group["keep"]]["reason"]) <= {"duplicate"}


def test_word_shingles_match_python_split():
    cfg = DedupConfig(shingle="word", ngram=3)
    for text in ["the quick  brown\tfox jumps\u00a0over the lazy dog the quick brown", "two words", "",
                 "a\u2003b\u3000c d\x1ce"]:
        words = text.split()
        expected = len({tuple(words[i:i + 3]) for i in range(len(words) - 2)}) if len(words) >= 3 \
            else (1 if words else 0)
        assert len(shingle_set(text, cfg)) == expected, text


def test_rerun_dedup_reuses_signatures(ray_instance, local_run, tmp_path):
    from pipelines.core.run import rerun_dedup
    from pipelines.pipeline import PIPELINE
    run, report = local_run
    sig_dir = run / "dedup" / "signatures" / "char25_128h_32b_seed10"
    before = {p: p.stat().st_mtime_ns for p in sig_dir.rglob("*.parquet")}
    again = rerun_dedup(PIPELINE, run, ["dedup.bands=9", "dedup.rows=13"], tmp_path / "b9r13", quiet=True)
    assert {p: p.stat().st_mtime_ns for p in sig_dir.rglob("*.parquet")} == before
    assert again["details"]["dedup"]["bands"] == 9 and again["totals"]["balanced"]
    # 9x13 catches more than 8x16 at mid Jaccard
    def dedup_removed(r):
        return sum(sum(s["stages"]["dedup"]["removed"].values()) for s in r["sources"].values())
    assert dedup_removed(again) > dedup_removed(report) and again["stages"][-1] == "dedup"
    assert (tmp_path / "b9r13" / "dedup" / "decisions").is_dir()


def test_shuffle_objects_do_not_grow_with_partitions(ray_instance, local_run, tmp_path):
    """Each dedup step makes one Ray object per task (map or reduce), never one per (map, partition);
    the components and resolve steps run on the partitions the graph needs, whatever dedup.partitions;
    neither changes a decision, and graph_partition_mb changes no byte of the outputs at all."""
    from pipelines.core.outputs import read_json
    from pipelines.core.run import rerun_dedup
    from pipelines.pipeline import PIPELINE
    run, _ = local_run
    seen = {}
    for name, sets in {"p4": ["dedup.partitions=4"], "p64": ["dedup.partitions=64"],
                       "p64-sliced": ["dedup.partitions=64", "dedup.graph_partition_mb=0.001"]}.items():
        out = tmp_path / name
        rerun_dedup(PIPELINE, run, sets, out, quiet=True)
        attempt = read_json(out / "manifest.json")["attempts"][-1]
        tasks = {k: v for k, v in attempt["tasks"].items() if k in attempt["objects"]}
        seen[name] = tasks, attempt["objects"], out
        assert not (out / "dedup" / "shuffle").exists(), "shuffle files are deleted"
        assert {k: v - (k == "dedup/resolve") for k, v in attempt["objects"].items()} == tasks  # + the id table
    (tasks4, objects4, out4), (tasks64, objects64, out64), (tasks_s, objects_s, out_s) = seen.values()
    maps = tasks4["dedup/bucket_map"]
    assert maps == tasks64["dedup/bucket_map"] > 1
    assert objects4["dedup/bucket_map"] + objects4["dedup/buckets"] == maps + 4  # the object store's: maps x 5
    assert objects64["dedup/bucket_map"] + objects64["dedup/buckets"] == maps + 64  # maps x 65
    rounds = read_json(out64 / "dedup" / "summary.json")["summary"]["components_rounds"]
    graph_steps = ("dedup/large", "dedup/small", "dedup/members", "dedup/resolve")
    assert [objects4[s] for s in graph_steps] == [objects64[s] for s in graph_steps] == [rounds, rounds, 1, 2]
    assert [objects_s[s] for s in graph_steps] == [16 * rounds, 16 * rounds, 16, 17]  # 0.001 MiB: 9 -> 16 of 64
    decisions = sorted(p.name for p in (out4 / "dedup" / "decisions").iterdir())
    assert decisions
    for p in decisions:
        assert (out4 / "dedup" / "decisions" / p).read_bytes() == (out64 / "dedup" / "decisions" / p).read_bytes()
    for p in sorted((out64 / "dedup").rglob("*")):
        if p.is_file() and "_done" not in p.parts and "signatures" not in p.parts:
            assert p.read_bytes() == (out_s / p.relative_to(out64)).read_bytes(), p
