"""Every real-world case of ../shared/data/ext runs through the whole pipeline with the exact counts its
expected.md states (one run per case, sources a case lacks disabled as its expected.md says)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.schema import read_documents
from pipelines.core.sources import COMPONENTS
from tests.conftest import run_local, shard_documents

# case -> (disabled sources, {source: (read, kept, quarantined, {quarantine reason: n}, {removal: n} or None)})
# None for removals: quality-classifier removals are the model's call, not this case's subject
CASES = {
    "01-zstd-frame-at-1mib": (["fwe", "zyda", "dolma-cc"], {"dclm": (182, 182, 0, {}, {})}),
    "03-parquet-dictionary-text": (["dclm", "dolma-cc"], {"fwe": (25, 25, 0, {}, {}), "zyda": (50, None, 0, {}, None)}),
    "05-parquet-invalid-utf8": (["dclm", "dolma-cc"], {"fwe": (20, 19, 1, {"invalid_utf8": 1}, {}),
                                                       "zyda": (20, None, 2, {"invalid_utf8": 2}, None)}),
    "06-jsonl-surrogate-escapes": (["fwe", "zyda"], {"dclm": (10, 8, 2, {"lone_surrogate": 2}, {}),
                                                     "dolma-cc": (10, None, 2, {"lone_surrogate": 2}, None)}),
    "07-jsonl-nan-infinity": (["fwe", "zyda"], {"dclm": (10, 10, 0, {}, {}), "dolma-cc": (10, None, 0, {}, None)}),
    "09-whitespace-and-short-docs": (["zyda", "dolma-cc"], {
        "dclm": (10, 7, 2, {"blank_text": 2}, {"dedup:cross_source_duplicate": 1}),
        "fwe": (10, 9, 1, {"blank_text": 1}, {})}),
    "10-cjk-emoji-minhash": ([], {"fwe": (4, 4, 0, {}, {}), "dclm": (2, 1, 0, {}, {"dedup:cross_source_duplicate": 1}),
                                  "zyda": (2, 0, 0, {}, {"dedup:cross_source_duplicate": 2}),
                                  "dolma-cc": (1, 0, 0, {}, {"dedup:cross_source_duplicate": 1})}),
    "11-empty-files": ([], {"fwe": (11, 10, 1, {"empty_file": 1}, {}), "dclm": (6, 5, 1, {"empty_file": 1}, {}),
                            "dolma-cc": (6, None, 1, {"empty_file": 1}, None), "zyda": (5, None, 0, {}, None)}),
    "12-duplicate-native-ids": (["dclm", "zyda"], {"fwe": (20, 20, 0, {}, {}), "dolma-cc": (20, None, 0, {}, None)}),
    "13-file-names-and-collisions": (["fwe"], {"dclm": (12, 12, 0, {}, {}), "zyda": (16, None, 0, {}, None),
                                               "dolma-cc": (20, None, 0, {}, None)}),
}


@pytest.fixture(scope="module")
def ext_runs(ray_instance, data_dir, tmp_path_factory):
    runs = {}
    for case, (disabled, _) in CASES.items():
        out = tmp_path_factory.mktemp(case[:2])
        runs[case] = out, run_local(out, data_dir / "ext" / case / "sources",
                                    [f"sources.{s}.enabled=false" for s in disabled])
    return runs


def _table(out, folder):
    files = sorted((out / folder).glob("*/*.parquet") if folder != "quarantine" else (out / folder).glob("*.parquet"))
    return pa.concat_tables([read_documents(f) for f in files]).to_pandas() if files else None  # selections resolved


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_counts_are_exactly_the_expected(ext_runs, case):
    out, report = ext_runs[case]
    assert report["totals"]["balanced"] and not report["problems"]
    assert set(report["sources"]) == set(CASES[case][1])
    for source, (read, kept, quarantined, reasons, removed) in CASES[case][1].items():
        got = report["sources"][source]
        assert got["read"] == read and got["quarantined"] == quarantined, source
        assert got["quarantine_reasons"] == reasons, source
        if kept is not None:
            assert got["kept"] == kept, source
        if removed is not None:
            assert got["removed"] == removed, source
        else:  # only the quality classifier may remove documents here
            assert all(k.startswith("quality_filter:") for k in got["removed"]), source


def test_dictionary_text_reads_as_its_strings(ext_runs, data_dir):
    out, _ = ext_runs["03-parquet-dictionary-text"]
    docs = _table(out, "ingest")
    zyda = docs[docs.source == "zyda"]
    plain = pq.read_table(data_dir / "ext/03-parquet-dictionary-text/sources/zyda/zyda_refinedweb/"
                                     "train-00000-of-00001.parquet").column("text").to_pylist()
    by_file = {f: list(g.sort_values("src_row").text) for f, g in zyda.groupby("src_file")}
    assert (by_file["zyda_c4-en/train-00000-of-00001.parquet"]
            == by_file["zyda_refinedweb/train-00000-of-00001.parquet"] == plain)
    quality = _table(out, "quality_filter")
    kept = quality[quality.source == "zyda"].groupby("src_file").size().to_dict()
    assert len(set(kept.values())) == 1  # same outcome for the same texts, whatever their encoding


def test_invalid_utf8_rows_are_named_and_the_rest_tokenized(ext_runs):
    out, report = ext_runs["05-parquet-invalid-utf8"]
    q = _table(out, "quarantine")
    assert sorted(zip(q.src_file, q.src_row)) == [("data/CC-MAIN-2024-10/train-00000-of-00001.parquet", 19),
                                                   ("zyda_c4-en/train-00000-of-00001.parquet", 3),
                                                   ("zyda_c4-en/train-00000-of-00001.parquet", 11)]
    assert q.reason.str.startswith("invalid_utf8: byte ").all()
    held = sum(len(shard_documents(out, c, role)) for c in ("fwe3", "zyda_crossdeduped-filtered")
               for role in ("train", "val"))
    assert held == report["sources"]["fwe"]["kept"] + report["sources"]["zyda"]["kept"]


def test_surrogates_follow_the_policy(ext_runs, data_dir):
    out, _ = ext_runs["06-jsonl-surrogate-escapes"]
    q = _table(out, "quarantine")
    assert sorted(q.src_row) == [2, 2, 3, 3]
    assert q.reason.str.fullmatch(r"lone_surrogate: U\+D[89A-F][0-9A-F]{2} "
                                  r"without its pair at character \d+ of 'text'").all()
    docs = _table(out, "ingest").set_index(["source", "src_row"])
    assert "\U0001F600" in docs.loc[("dclm", 1), "text"] and "\U00020000" in docs.loc[("dclm", 1), "text"]
    assert "\ufffd" in docs.loc[("dclm", 4), "metadata"] + str(docs.loc[("dclm", 4), "url"])  # kept, repaired


def test_non_finite_numbers_become_null_and_stay_readable(ext_runs):
    out, report = ext_runs["07-jsonl-nan-infinity"]
    docs = _table(out, "ingest")
    dclm = docs[docs.source == "dclm"].set_index("src_row")
    prob = "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob"
    for _row, doc in dclm.iterrows():
        meta = json.loads(doc.metadata)
        if prob in meta:  # a non-finite literal: null in the typed column, its literal in metadata
            assert meta[prob] in ("NaN", "Infinity", "-Infinity") and doc.dclm_fasttext_prob != doc.dclm_fasttext_prob
    assert report["sources"]["dclm"]["stages"]["ingest"]["typed_nulls"] == {
        "dclm_fasttext_prob:non_finite": int(dclm.dclm_fasttext_prob.isna().sum())}
    assert dclm.dclm_fasttext_prob.isna().sum() >= 1


def test_no_blank_text_reaches_the_shards(ext_runs):
    out, report = ext_runs["09-whitespace-and-short-docs"]
    table = _table(out, "ingest")
    assert not table.text.str.isspace().any() and (table.text.str.len() > 0).all()
    shards = [d for c in COMPONENTS.values() for role in ("train", "val") for d in shard_documents(out, c, role)]
    assert len(shards) == report["totals"]["kept"] and all(len(d) > 1 for d in shards)  # more than EOS alone
    q = _table(out, "quarantine")
    assert sorted(zip(q.source, q.src_row)) == [("dclm", 1), ("dclm", 3), ("fwe", 2)]


def test_empty_files_are_named(ext_runs):
    out, _ = ext_runs["11-empty-files"]
    q = _table(out, "quarantine")
    assert sorted(q.src_file) == sorted(["data/CC-MAIN-2023-50/train-00000-of-00001.parquet",
                                         "global-shard_01_of_10/local-shard_0_of_10/shard_00000000_processed.jsonl.zst",
                                         "cc_en_head/cc_en_head-0000.json.gz"])
    assert (q.reason == "empty_file: the file has 0 bytes").all()


def test_duplicate_native_ids_are_kept_apart(ext_runs):
    out, _ = ext_runs["12-duplicate-native-ids"]
    docs = _table(out, "ingest")
    assert docs.nemo_id.is_unique and docs.native_id.duplicated().any()


def test_colliding_names_get_their_own_partitions(ext_runs, data_dir):
    out, _ = ext_runs["13-file-names-and-collisions"]
    docs = _table(out, "ingest")
    assert docs.nemo_id.is_unique and not docs.duplicated(["source", "text"]).any()
    counts = docs.groupby(["source", "src_file"]).size().to_dict()
    assert counts == {("dclm", "global-shard_01_of_10/local-shard_0_of_10/shard_00000000_processed.jsonl.zst"): 6,
                      ("dclm", "global-shard_01_of_10/local-shard_0_of_10/shard_00000000_processed.parquet"): 6,
                      ("zyda", "zyda_c4-en/part/train-00000.parquet"): 8,
                      ("zyda", "zyda_c4-en/part__train-00000.parquet"): 8,
                      **{("dolma-cc", f"cc_en_head/{n}"): 5 for n in
                         ["cc#en%20head 0003.json.gz", "cc_en_head-0000 (1).json.gz", "cc_en_head[2].json.gz",
                          "cc_en_héad-0001.json.gz"]}}
    for (source, rel), group in docs.groupby(["source", "src_file"]):  # each row is its file's own row
        native = pq.read_table(data_dir / "ext/13-file-names-and-collisions/sources" /
                               {"dclm": "dclm", "zyda": "zyda"}[source] / rel) if rel.endswith(".parquet") else None
        if native is not None:
            assert list(group.sort_values("src_row").text) == native.column("text").to_pylist()
