"""Every deliberately broken fixture ends as quarantine records with a precise reason; no crash, no silent drop."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_local

# file -> (source folder, expected kept, expected {reason key: count})  (../shared/data/README.md, sources_bad)
BAD = {
    "dclm_malformed_line.jsonl.zst": ("dclm", 5, {"malformed_json": 1}),
    "dclm_empty_and_null_text.jsonl.zst": ("dclm", 3, {"empty_text": 1, "null_text": 1}),
    "dclm_invalid_utf8.jsonl.zst": ("dclm", 2, {"invalid_utf8": 1}),
    "dclm_huge_doc.jsonl.zst": ("dclm", 3, {}),
    "dolma_truncated.json.gz": ("dolma-cc", 9, {"truncated_or_corrupt_file": 1}),
    "fineweb_edu_no_text_column.parquet": ("fineweb-edu", 0, {"missing_column": 10}),
}


@pytest.fixture(scope="module")
def bad_run(ray_instance, data_dir, tmp_path_factory):
    inp = tmp_path_factory.mktemp("bad_input")
    for folder in ("dclm", "fineweb-edu", "zyda", "dolma-cc"):
        (inp / folder).mkdir()
    for name, (folder, _, _) in BAD.items():
        (inp / folder / name).symlink_to(data_dir / "sources_bad" / name)
    out = tmp_path_factory.mktemp("bad_run")
    return out, run_local(out, inp, allow_empty=True)  # zyda has no file, fineweb-edu no readable document


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_file_is_accounted_exactly(bad_run, name):
    out, _ = bad_run
    folder, kept, reasons = BAD[name]
    ingested = pq.read_table(sorted((out / "ingest").glob("*/*.parquet"))).to_pandas()
    assert (ingested["src_file"] == name).sum() == kept
    q_files = sorted((out / "quarantine").glob("*.parquet"))
    quarantine = pq.read_table(q_files).to_pandas() if q_files else None
    got = {} if quarantine is None else \
        quarantine[quarantine["src_file"] == name]["reason"].str.split(":").str[0].value_counts().to_dict()
    assert got == reasons


def test_quarantine_records_say_where_and_why(bad_run):
    out, _ = bad_run
    q = pq.read_table(sorted((out / "quarantine").glob("*.parquet"))).to_pandas().set_index("src_file")
    assert q.loc["dclm_malformed_line.jsonl.zst", "src_row"] == 3
    assert q.loc["dclm_invalid_utf8.jsonl.zst", "src_row"] == 1
    assert q.loc["dclm_invalid_utf8.jsonl.zst", "reason"].startswith("invalid_utf8")
    assert q.loc["dclm_malformed_line.jsonl.zst", "excerpt"].startswith('{"text": "unterminated record')
    truncated = q.loc["dolma_truncated.json.gz"]
    assert truncated["src_row"] == 9 and truncated["byte_offset"] > 0
    nulls = q.loc["dclm_empty_and_null_text.jsonl.zst"].set_index("src_row")["reason"]
    assert nulls[1].startswith("empty_text") and nulls[3].startswith("null_text")


def test_huge_document_is_kept_whole(bad_run):
    out, _ = bad_run
    docs = pq.read_table(sorted((out / "ingest" / "dclm").glob("*.parquet"))).to_pandas()
    assert docs.set_index(["src_file", "src_row"]).loc[("dclm_huge_doc.jsonl.zst", 1), "text"].__len__() == 2_097_152


def test_files_not_read_to_their_end_are_named(bad_run):
    out, report = bad_run
    assert report["details"]["ingest"] == {"incomplete_files": {"dolma-cc/dolma_truncated.json.gz": 0},
                                           "unread_bytes": 0}  # every byte decoded; the stream just stops
    q = pq.read_table(out / "quarantine" / "dolma-cc__dolma_truncated.json.gz.parquet").to_pandas()
    assert q.unread_bytes.tolist() == [0] and q.excerpt[0].startswith("{")  # the start of the cut record


def test_bad_run_balances(bad_run):
    _, report = bad_run
    assert report["totals"]["balanced"]
    assert report["sources"]["dclm"] == {**report["sources"]["dclm"], "read": 17, "kept": 13, "quarantined": 4}
    assert report["sources"]["dolma-cc"]["read"] == 10 and report["sources"]["dolma-cc"]["quarantined"] == 1
    assert report["sources"]["fwe"]["quarantine_reasons"] == {"missing_column": 10}
    assert report["sources"]["zyda"]["read"] == 0
