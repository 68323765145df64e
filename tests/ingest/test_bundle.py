"""Small input files are read as bundles (`ingest.bundle_mb`): the same documents, ids, decisions and
token stream as one partition per file, per-file accounting in the marker, quarantine per file."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.config import load_config
from pipelines.core.schema import read_documents, read_folder, selection
from pipelines.core.sources import COMPONENTS, SOURCES
from pipelines.core.stage import done_stats, write_marker
from pipelines.ingest.discover import discover
from pipelines.tokens.indexed_dataset import IndexedDataset
from tests.conftest import DATA, REPO, kept_documents, run_local

UNBUNDLED = ["ingest.bundle_mb=null"]


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> Path:
    """3 MB of the fixtures' text in 120 files (30 per source), written by the shared scale-corpus tool."""
    root = tmp_path_factory.mktemp("small-files") / "corpus"
    subprocess.run([sys.executable, str(DATA.parent / "tools" / "make_scale_corpus.py"), str(root), "--mb", "3",
                    "--files-per-source", "30", "--seed", "3"], check=True, capture_output=True)
    return root


def config(input_dir: Path, out: Path, overrides=()):
    return load_config(REPO / "configs" / "local.yaml", list(overrides), input_dir=str(input_dir),
                       output_dir=str(out))


def test_bundles_are_consecutive_small_files_of_one_subfolder_and_format(small_files, tmp_path):
    bundled = discover(config(small_files, tmp_path))
    files = discover(config(small_files, tmp_path, UNBUNDLED))
    assert all(not sf.members for sf in files) and len(bundled) < len(files) / 4
    assert [f for sf in bundled for f in sf.files] == files  # every file once, in order
    assert len({sf.part_name for sf in bundled}) == len(bundled)
    for sf in bundled:
        spec = SOURCES[sf.source]
        assert len({(f.source, spec.hub_subfolder(f.rel), f.id_prefix, f.fmt) for f in sf.files}) == 1
        assert (sf.url, sf.rel, sf.id_prefix, sf.partition) == (sf.files[0].url, sf.files[0].rel,
                                                                 sf.files[0].id_prefix, sf.files[0].partition)
        assert sum(Path(f.url).stat().st_size for f in sf.files) <= 16 * 2**20
    tiny = discover(config(small_files, tmp_path, ["ingest.bundle_mb=0.01"]))  # 10 KB: most files alone
    assert len(bundled) < len(tiny) <= len(files)
    assert all(sum(Path(f.url).stat().st_size for f in sf.files) <= 0.01 * 2**20 for sf in tiny if sf.members)


def test_a_bundle_never_spans_two_hub_subfolders(tmp_path):
    """zyda files outside any `zyda_*` folder share the id prefix `zyda`, but publish under their first
    folder (or `default`): a bundle of two of them would publish one file's rows under the other's."""
    fixture = next((DATA / "sources" / "zyda").rglob("*.parquet"))
    for rel in ("a.parquet", "extra/b.parquet", "extra/c.parquet", "more/d.parquet"):
        (tmp_path / "in" / "zyda" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fixture, tmp_path / "in" / "zyda" / rel)
    only_zyda = [f"sources.{s}.enabled=false" for s in SOURCES if s != "zyda"]
    files = discover(config(tmp_path / "in", tmp_path / "out", ["ingest.bundle_mb=64", *only_zyda]))
    assert {f.id_prefix for sf in files for f in sf.files} == {"zyda"}
    assert [[f.rel for f in sf.files] for sf in files] == [["a.parquet"], ["extra/b.parquet", "extra/c.parquet"],
                                                            ["more/d.parquet"]]


def test_a_bundle_whose_files_changed_is_not_done(small_files, tmp_path):
    bundle = next(sf for sf in discover(config(small_files, tmp_path)) if len(sf.members) > 2)
    write_marker(tmp_path, "ingest", "h", bundle, {"read": 1}, 0.1)
    assert done_stats(tmp_path, "ingest", "h", bundle) == {"read": 1}
    fewer = dataclasses.replace(bundle, members=bundle.members[:-1])
    assert fewer.part_name != bundle.part_name  # a new name, and even under the old one:
    shutil.copy(tmp_path / "ingest" / "_done" / f"{bundle.source}__{bundle.part_name}.json",
                tmp_path / "ingest" / "_done" / f"{fewer.source}__{fewer.part_name}.json")
    assert done_stats(tmp_path, "ingest", "h", fewer) is None


def test_a_bundled_run_keeps_the_same_documents_ids_decisions_and_tokens(ray_instance, small_files, tmp_path):
    runs = {}
    for name, overrides in (("files", UNBUNDLED), ("bundles", [])):
        out = tmp_path / name
        runs[name] = (out, run_local(out, small_files, overrides))
    (files, rf), (bundles, rb) = runs["files"], runs["bundles"]
    markers = {name: sorted((out / "ingest" / "_done").iterdir()) for name, (out, _) in runs.items()}
    assert len(markers["bundles"]) < len(markers["files"]) / 4
    assert rb["sources"] == rf["sources"] and rb["totals"] == rf["totals"]  # accounting per source unchanged
    # accounting per input file: a bundle's marker counts each of its files as its own run did
    per_file = {}
    for path in markers["files"]:
        stats = json.loads(path.read_text())["stats"]
        per_file[stats["src_file"]] = {k: stats[k] for k in ("read", "out", "quarantined")}
    bundled_files = {}
    for path in markers["bundles"]:
        stats = json.loads(path.read_text())["stats"]
        bundled_files.update(stats.get("files") or {stats["src_file"]: {k: stats[k] for k in ("read", "out",
                                                                                               "quarantined")}})
    assert bundled_files == per_file
    for source in SOURCES:  # what tokenize read: same documents, ids, provenance, scores, split, anneal set
        a, b = (kept_documents(out, source).sort_values("nemo_id", ignore_index=True) for out in (files, bundles))
        assert len(a) and a.equals(b)
    dec = {name: pq.read_table(out / "dedup" / "decisions").sort_by("nemo_id") for name, (out, _) in runs.items()}
    assert dec["files"].num_rows and dec["files"].equals(dec["bundles"])
    for component in COMPONENTS.values():
        for role in ("train", "val"):
            streams = []
            for out in (files, bundles):
                docs = [IndexedDataset(p.with_suffix("")) for p in sorted((out / "shards" / component / role)
                                                                           .glob("*.idx"))]
                streams.append([d[i].tolist() for d in docs for i in range(len(d))])
            assert streams[0] and streams[0] == streams[1], (component, role)  # documents in the same order


def test_a_bundle_quarantines_each_file_under_its_own_name(ray_instance, tmp_path):
    """A malformed file inside a bundle: its records are quarantined with their own src_file and rows,
    the others are read, and the marker counts each file."""
    root = tmp_path / "in" / "dclm" / "global-shard_01_of_10"
    root.mkdir(parents=True)
    good = sorted((DATA / "sources" / "dclm" / "global-shard_01_of_10").rglob("*.jsonl.zst"))[0]
    shutil.copy(good, root / "a.jsonl.zst")
    shutil.copy(DATA / "sources_bad" / "dclm_malformed_line.jsonl.zst", root / "b.jsonl.zst")
    shutil.copy(good, root / "c.jsonl.zst")
    overrides = [f"sources.{s}.enabled=false" for s in SOURCES if s != "dclm"]
    out = tmp_path / "run"
    (bundle,) = discover(config(tmp_path / "in", out, overrides))
    assert [f.rel for f in bundle.files] == [f"global-shard_01_of_10/{n}.jsonl.zst" for n in "abc"]
    report = run_local(out, tmp_path / "in", overrides)
    stats = json.loads((out / "ingest" / "_done" / f"dclm__{bundle.part_name}.json").read_text())["stats"]
    files = stats["files"]
    assert files["global-shard_01_of_10/a.jsonl.zst"] == files["global-shard_01_of_10/c.jsonl.zst"]
    bad = files["global-shard_01_of_10/b.jsonl.zst"]
    assert bad["quarantined"] >= 1 and bad["read"] == bad["out"] + bad["quarantined"]
    quarantine = pq.read_table(out / "quarantine" / f"dclm__{bundle.part_name}.parquet")
    assert set(quarantine.column("src_file").to_pylist()) == {"global-shard_01_of_10/b.jsonl.zst"}
    assert report["sources"]["dclm"]["quarantined"] == quarantine.num_rows == bad["quarantined"]
    ids = read_folder(out / "ingest" / "dclm", ["nemo_id"]).column("nemo_id").to_pylist()
    assert len(ids) == len(set(ids)) == sum(f["out"] for f in files.values())


def test_a_selection_names_documents_by_file_and_row(tmp_path):
    """A bundle's files each count rows from 0: a selection resolves (src_file, src_row), not src_row."""
    base = tmp_path / "ingest" / "docs.parquet"
    base.parent.mkdir()
    docs = pa.table({"src_file": ["a", "a", "a", "b", "b", "c"], "src_row": [0, 1, 2, 0, 1, 0],
                     "text": ["a0", "a1", "a2", "b0", "b1", "c0"]})
    pq.write_table(docs, base)
    keep = pa.array([False, True, False, True, False, True])
    dest = tmp_path / "quality" / "docs.parquet"
    dest.parent.mkdir()
    picked = docs.filter(keep).append_column("score", pa.array([1.0, 2.0, 3.0]))
    pq.write_table(selection(picked, base, dest), dest)
    back = read_documents(dest)
    assert back.column("text").to_pylist() == ["a1", "b0", "c0"]
    assert back.column("score").to_pylist() == [1.0, 2.0, 3.0]
    assert np.array_equal(back.column("src_row").to_numpy(), [1, 0, 0])
