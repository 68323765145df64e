"""Whole runs: accounting, byte-identical reruns, resume, and the rules that protect a run folder."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from pipelines.core.config import load_config
from pipelines.core.report import AccountingError, build_report, check_report
from pipelines.core.run import RunError, run_pipeline
from pipelines.ingest.discover import discover
from pipelines.pipeline import PIPELINE
from tests.conftest import REPO, files_digest, run_local


def test_accounting_identity_holds_per_source(local_run):
    out, report = local_run
    totals = report["totals"]
    assert totals["read"] == 2368 and totals["quarantined"] == 0 and totals["balanced"]
    assert totals["removed"] > 0 and totals["kept"] == 2368 - totals["removed"]
    decisions = pq.read_table(sorted((out / "dedup" / "decisions").glob("*.parquet"))).to_pandas()
    dedup_removed = sum(sum(r["stages"]["dedup"]["removed"].values()) for r in report["sources"].values())
    assert (~decisions["keep"]).sum() == dedup_removed > 0
    # the documents on disk after the last filtering stage are exactly the kept ones
    where = {"dclm": "dedup", "fwe": "quality_filter", "zyda": "quality_filter", "dolma-cc": "quality_filter"}
    kept_docs = sum(pq.read_metadata(p).num_rows for source, stage in where.items()
                    for p in (out / stage / source).glob("*.parquet"))
    assert kept_docs == totals["kept"]
    expected = {"dclm": 578, "fwe": 588, "zyda": 600, "dolma-cc": 602}
    for source, n in expected.items():
        r = report["sources"][source]
        assert r["read"] == n and r["balanced"]
        assert r["read"] == r["kept"] + sum(r["removed"].values()) + r["quarantined"]
        assert r["stages"]["ingest"]["chars_out"] > 0
    assert report["stages"] == ["ingest", "heuristic_filter", "dedup", "quality_filter", "tokenize", "shards"]


def test_manifest_records_config_versions_and_stage_status(local_run):
    out, _ = local_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and len(manifest["config_hash"]) == 16
    assert manifest["versions"]["ray"] == "2.60.0" and manifest["versions"]["pyarrow"] == "26.0.1"
    assert manifest["stages"]["ingest"]["status"] == "done"
    assert all(manifest["stages"][s]["status"] == "done" for s in ("dedup", "quality_filter", "tokenize", "shards"))
    assert manifest["config"]["dedup"]["bands"] == 8


def test_accounting_mismatch_fails_loudly():
    ok = {"in": 10, "out": 8, "removed": {}, "quarantined": 2, "chars_out": 1}
    lossy = {"in": 8, "out": 5, "removed": {"too_short": 2}, "quarantined": 0, "chars_out": 1}
    report = build_report({"ingest": {"dclm": ok}, "heuristic_filter": {"dclm": lossy}})
    assert not report["totals"]["balanced"]
    with pytest.raises(AccountingError, match="dclm: stage heuristic_filter in=8 != out=5"):
        check_report(report)


def test_rerun_and_other_worker_count_are_byte_identical(local_run, data_dir, tmp_path):
    out, _ = local_run
    again = tmp_path / "again"
    run_local(again, data_dir / "sources", ["ray.task_cpus=2"])  # one task at a time instead of four
    first, second = files_digest(out), files_digest(again)
    assert sorted(first) == sorted(second) and len(first) > 20
    assert [n for n in first if first[n] != second[n]] == []


def test_resume_finishes_an_interrupted_run_identically(local_run, data_dir, tmp_path):
    out, _ = local_run
    crashed = tmp_path / "crashed"
    shutil.copytree(out, crashed)
    # what a crash leaves: some partitions missing, a half-written file, no report
    for victim in sorted((crashed / "ingest" / "_done").glob("dclm__*"))[:2] + \
            sorted((crashed / "ingest" / "_done").glob("zyda__*"))[:1]:
        victim.unlink()
    (crashed / "ingest" / "dclm" / sorted((crashed / "ingest" / "dclm").glob("*.parquet"))[0].name).unlink()
    (crashed / "ingest" / "dclm" / ".half.parquet.tmp-1234").write_bytes(b"PAR1 garbage")
    (crashed / "report.json").unlink()
    # and in dedup: a lost signature partition, lost decisions markers, no summary
    sig_markers = sorted((crashed / "dedup" / "signatures").rglob("_done/fwe__*.json"))
    sig_markers[0].unlink()
    for marker in sorted((crashed / "dedup" / "_done").glob("*.json"))[::3]:
        marker.unlink()
    (crashed / "dedup" / "summary.json").unlink()
    with pytest.raises(RunError, match="--resume"):
        run_local(crashed, data_dir / "sources")
    run_local(crashed, data_dir / "sources", resume=True)
    assert files_digest(crashed) == files_digest(out)


def test_resume_refuses_another_config(local_run, data_dir, tmp_path):
    out, _ = local_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(RunError, match="another config"):
        run_local(copy, data_dir / "sources", ["dedup.seed=1"], resume=True)


def test_resume_refuses_other_input_files(ray_instance, data_dir, tmp_path):
    """A file added, removed or renamed since the run started would move partitions, `nemo_id`s and
    shard boundaries under finished outputs: refused, naming the source; the same files resume."""
    inputs = tmp_path / "sources"
    shutil.copytree(data_dir / "sources", inputs)
    out = tmp_path / "run"
    run_local(out, inputs, only=["ingest"])
    listing = json.loads((out / "manifest.json").read_text())["inputs"]
    assert {s: v["files"] for s, v in listing.items()} == {"dclm": 3, "dolma-cc": 3, "fwe": 2, "zyda": 3}
    zyda = inputs / "zyda" / "zyda_refinedweb"
    shutil.copy(zyda / "train-00001-of-00002.parquet", zyda / "train-00000-of-00002.extra.parquet")
    with pytest.raises(RunError, match=r"other input files \(zyda: 3 files then, 4 now\)"):
        run_local(out, inputs, only=["ingest"], resume=True)
    (zyda / "train-00000-of-00002.extra.parquet").rename(zyda / "train-00001-of-00002.parquet")
    (zyda / "train-00000-of-00002.parquet").rename(zyda / "train-00002-of-00002.parquet")  # renamed: same count
    with pytest.raises(RunError, match=r"zyda: 3 files then, 3 now"):
        run_local(out, inputs, only=["ingest"], resume=True)
    (zyda / "train-00002-of-00002.parquet").rename(zyda / "train-00000-of-00002.parquet")
    report = run_local(out, inputs, only=["ingest"], resume=True)
    assert report["totals"]["read"] == 2368


def test_sources_on_fsspec_urls_and_url_lists(ray_instance, data_dir, tmp_path):
    """The remote path (hf://, https://) goes through fsspec globbing and url lists; file:// exercises it here."""
    root = (data_dir / "sources").as_uri()
    listing = tmp_path / "dolma_urls.txt"
    listing.write_text("".join(f"{root}/dolma-cc/{rel}\n" for rel in
                               ["cc_en_head/cc_en_head-0001.json.gz", "cc_en_middle/cc_en_middle-0000.json.gz",
                                "cc_en_tail/not-wanted.txt"]))
    cfg = load_config(REPO / "configs" / "zyda2.yaml", [
        f"sources.fwe.path={root}/fineweb-edu", "sources.dclm.enabled=false", "sources.zyda.enabled=false",
        f"sources.dolma-cc.path={root}/dolma-cc", f"sources.dolma-cc.files_from={listing}",
        "ingest.max_docs_per_file=7", "quality_filter.apply_to=[]"], output_dir=str(tmp_path / "out"))
    files = discover(cfg)
    assert [(f.source, f.rel, f.partition) for f in files] == [
        ("dolma-cc", "cc_en_head/cc_en_head-0001.json.gz", 0),
        ("dolma-cc", "cc_en_middle/cc_en_middle-0000.json.gz", 1),
        ("fwe", "data/CC-MAIN-2023-50/train-00000-of-00001.parquet", 0),
        ("fwe", "data/CC-MAIN-2024-10/train-00000-of-00001.parquet", 0)]
    report = run_pipeline(PIPELINE, cfg, quiet=True)
    assert report["sources"]["fwe"]["read"] == 14 and report["sources"]["dolma-cc"]["kept"] == 14
