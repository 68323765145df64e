"""Ingest on the shared fixtures: exact counts, exact values, stable unique ids."""

from __future__ import annotations

import csv
import json
import re

import pyarrow.parquet as pq
import pytest

from pipelines.core.schema import DOC_SCHEMA
from pipelines.core.sources import INPUT_FOLDERS

SOURCE_OF_FOLDER = {v: k for k, v in INPUT_FOLDERS.items()}


@pytest.fixture(scope="module")
def ingested(local_run):
    out, _ = local_run
    table = pq.read_table(sorted((out / "ingest").glob("*/*.parquet")))
    return table.to_pandas()


@pytest.fixture(scope="module")
def doc_index(data_dir):
    df = pq.read_table(data_dir / "doc_index.parquet").to_pandas()
    df["src"] = df["source"].map(SOURCE_OF_FOLDER)
    return df


def test_schema_is_the_documented_one(local_run):
    out, _ = local_run
    for path in (out / "ingest").glob("*/*.parquet"):
        assert pq.read_schema(path).equals(DOC_SCHEMA, check_metadata=False), path


def test_record_counts_per_file_match_manifest(local_run, data_dir, ingested):
    with open(data_dir / "MANIFEST.tsv") as f:
        expected = {r["path"]: int(r["rows"]) for r in csv.DictReader(f, delimiter="\t")
                    if r["path"].startswith("sources/")}
    got = ingested.groupby(["source", "src_file"]).size()
    for path, rows in expected.items():
        _, folder, rel = path.split("/", 2)
        assert got[(SOURCE_OF_FOLDER[folder], rel)] == rows, path
    assert len(ingested) == sum(expected.values()) == 2368


def test_every_indexed_document_has_its_text_and_ids(ingested, doc_index):
    merged = doc_index.merge(ingested, left_on=["src", "file", "row"], right_on=["source", "src_file", "src_row"],
                             how="left", validate="one_to_one")
    assert merged["text"].notna().all()
    assert (merged["text"].str.len() == merged["n_chars"]).all()
    has_native = merged["native_id_x"].notna() & merged["src"].isin(["fwe", "dolma-cc"])
    assert has_native.sum() == (merged["src"].isin(["fwe", "dolma-cc"])).sum()
    assert (merged.loc[has_native, "native_id_x"] == merged.loc[has_native, "native_id_y"]).all()
    assert merged.loc[merged["src"].isin(["fwe", "dolma-cc"]), "native_id_y"].notna().all()


def test_nemo_ids_follow_the_convention_and_are_unique(ingested):
    assert ingested["nemo_id"].is_unique
    patterns = {"dclm": r"dclm-gs0[12]-\d{15}", "fwe": r"fwe2-CC-MAIN-20(23-50|24-10)-\d{15}",
                "zyda": r"zyda_(c4-en|refinedweb)-\d{15}", "dolma-cc": r"dolma-cc-\d{15}"}
    for source, pattern in patterns.items():
        ids = ingested.loc[ingested["source"] == source, "nemo_id"]
        assert len(ids) > 0 and ids.str.fullmatch(pattern).all(), source
    row = ingested[(ingested["source"] == "zyda")
                   & (ingested["src_file"] == "zyda_refinedweb/train-00001-of-00002.parquet")
                   & (ingested["src_row"] == 7)]
    assert row["nemo_id"].item() == "zyda_refinedweb-000000000700001"  # row 7 of the second refinedweb file


def test_native_fields_are_kept(ingested, data_dir):
    fwe_file = "data/CC-MAIN-2024-10/train-00000-of-00001.parquet"
    native = pq.read_table(data_dir / "sources" / "fineweb-edu" / fwe_file).to_pylist()
    ours = ingested[(ingested["source"] == "fwe") & (ingested["src_file"] == fwe_file)].sort_values("src_row")
    for (_, doc), raw in zip(ours.iterrows(), native):
        assert doc["int_score"] == raw["int_score"] and doc["edu_score"] == raw["score"]
        assert doc["url"] == raw["url"] and doc["native_id"] == raw["id"]
        meta = json.loads(doc["metadata"])
        assert meta == {k: raw[k] for k in ("dump", "file_path", "language", "language_score", "token_count")}
    dclm = ingested[ingested["source"] == "dclm"].iloc[0]
    meta = json.loads(dclm["metadata"])
    assert set(meta) == {"bff_contained_ngram_count_before_dedupe", "language_id_whole_page_fasttext", "metadata",
                         "previous_word_count", "warcinfo"}
    assert 0 <= dclm["dclm_fasttext_prob"] <= 1 and dclm["url"].startswith("http")
    zyda = ingested[ingested["source"] == "zyda"].iloc[0]
    meta = json.loads(zyda["metadata"])
    assert json.loads(meta["source_other"])["url"] == zyda["url"]
    assert json.loads(meta["filtering_features"])["word_count"] > 0
    dolma = ingested[ingested["source"] == "dolma-cc"].iloc[0]
    assert json.loads(dolma["metadata"])["metadata"]["url"] == dolma["url"]


def test_provenance_points_back_to_the_raw_record(ingested, data_dir):
    import zstandard
    doc = ingested[ingested["source"] == "dclm"].sort_values(["src_file", "src_row"]).iloc[17]
    with open(data_dir / "sources" / "dclm" / doc["src_file"], "rb") as f:
        lines = zstandard.ZstdDecompressor().stream_reader(f).read().split(b"\n")
    assert json.loads(lines[doc["src_row"]])["text"] == doc["text"]
    assert re.fullmatch(r"dclm-gs0\d-\d{15}", doc["nemo_id"])


def test_dclm_parquet_mirror_reads_like_the_jsonl(ray_instance, data_dir, tmp_path):
    """mlfoundations/dclm-baseline-1.0-parquet carries the same records as parquet: same documents out."""
    import zstandard

    from pipelines.core.sources import part_name
    from tests.conftest import run_local
    rel = "global-shard_01_of_10/local-shard_0_of_10/shard_00000000_processed"
    raw = zstandard.ZstdDecompressor().stream_reader(open(data_dir / "sources" / "dclm" / f"{rel}.jsonl.zst", "rb"))
    rows = [json.loads(line) for line in raw.read().splitlines()]
    inp = tmp_path / "in"
    for folder in ("fineweb-edu", "zyda", "dolma-cc"):
        (inp / folder).mkdir(parents=True)
    target = inp / "dclm" / f"{rel}.parquet"
    target.parent.mkdir(parents=True)
    import pyarrow as pa
    pq.write_table(pa.Table.from_pylist(rows), target)
    run_local(tmp_path / "out", inp, ["quality_filter.apply_to=[]"], allow_empty=True)  # dclm only
    got = pq.read_table(tmp_path / "out" / "ingest" / "dclm" / f"{part_name(rel + '.parquet')}.parquet").to_pandas()
    assert list(got["text"]) == [r["text"] for r in rows]
    assert list(got["nemo_id"]) == [f"dclm-gs01-{i:010d}00000" for i in range(len(rows))]
    assert (got["dclm_fasttext_prob"] == [r["fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob"]
                                          for r in rows]).all()
    assert json.loads(got["metadata"][0])["warcinfo"] == rows[0]["warcinfo"]
