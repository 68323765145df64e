"""The stage contract: a stage is one class and one line; the executor brings accounting, resume,
progress, hash chaining and fusing. And the refactor onto it changed no output: a run's tree is
pinned by its hash."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow.compute as pc

from filters.stage import FilterStage
from pipelines.core.config import load_config
from pipelines.core.run import run_pipeline
from pipelines.core.schema import read_documents, read_folder
from pipelines.core.sources import SOURCE_NAMES
from pipelines.pipeline import PIPELINE
from tests.conftest import DATA, REPO, files_digest


class ShorterThan:
    """A DocumentFilter (filters/base.py): removes documents of fewer than `min_chars` characters."""
    output_columns = ()

    def __init__(self, min_chars: int):
        self.min_chars = min_chars

    def score(self, docs):
        return {"chars": pc.utf8_length(docs.column("text")).to_pylist()}

    def keep(self, scores):
        return [None if n >= self.min_chars else f"shorter_than_{self.min_chars}" for n in scores["chars"]]


class LengthFilter(FilterStage):  # the one class
    name = "length_filter"

    def __init__(self, min_chars: int):
        self.min_chars = min_chars

    def filter_for(self, cfg, source):
        return ShorterThan(self.min_chars)


MIN_CHARS = 1500


def _cfg(out: Path, *overrides: str):
    return load_config(REPO / "configs" / "local.yaml", list(overrides), input_dir=str(DATA / "sources"),
                       output_dir=str(out))


def _short_docs(folder: Path, min_chars: int = MIN_CHARS) -> dict[str, int]:
    """Independent count: documents under `min_chars` in each source's dedup output."""
    counts = {}
    for source in SOURCE_NAMES:
        for path in sorted((folder / source).glob("*.parquet")):
            lengths = pc.utf8_length(read_documents(path, ["text"]).column("text"))
            counts[source] = counts.get(source, 0) + (pc.sum(pc.less(lengths, min_chars)).as_py() or 0)
    return counts


def test_a_stage_added_from_a_test_file_runs_end_to_end(ray_instance, tmp_path, capsys):
    pipeline = PIPELINE.with_stage(LengthFilter(MIN_CHARS), after="dedup")  # the one line
    out = tmp_path / "run"
    report = run_pipeline(pipeline, _cfg(out))
    assert report["stages"] == ["ingest", "heuristic_filter", "dedup", "length_filter", "quality_filter",
                                "tokenize", "shards"]
    assert report["totals"]["balanced"] and not report["problems"]
    expected = _short_docs(out / "dedup")
    assert sum(expected.values()) > 0
    for source, row in report["sources"].items():
        stage = row["stages"]["length_filter"]
        assert stage["removed"].get(f"shorter_than_{MIN_CHARS}", 0) == expected.get(source, 0)
        assert stage["in"] == row["stages"]["dedup"]["out"]
        assert row["stages"]["quality_filter"]["in"] == stage["out"]  # the next stage read its output
        assert row["removed"].get(f"length_filter:shorter_than_{MIN_CHARS}", 0) == expected.get(source, 0)
    assert sorted(p.name for p in (out / "length_filter").iterdir()) == ["_done", "dclm", "dolma-cc", "fwe", "zyda"]
    kept = read_folder(out / "length_filter" / "zyda", ["text"]).column("text")
    assert pc.min(pc.utf8_length(kept)).as_py() >= MIN_CHARS
    assert report["details"]["length_filter"]["examples"]  # removed examples come with the FilterStage
    err = capsys.readouterr().err
    assert re.search(r"\[4/7 length_filter\] (\d+)/\1 partitions \| [\d,]+ docs", err)
    assert "[4/7 length_filter] done in" in err

    # resume: a run cut after the new stage goes on from its markers and ends identical to a fresh run
    cut = tmp_path / "cut"
    run_pipeline(pipeline, _cfg(cut), until="length_filter", quiet=True)
    markers = {p: p.stat().st_mtime_ns for p in (cut / "length_filter" / "_done").iterdir()}
    run_pipeline(pipeline, _cfg(cut), resume=True, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in (cut / "length_filter" / "_done").iterdir()} == markers
    assert files_digest(cut) == files_digest(out)

    # resuming the finished run with another parameter is not "complete": the stage and every later
    # one are recomputed, the stages before it are not
    dedup_markers = {p: p.stat().st_mtime_ns for p in (cut / "dedup" / "_done").iterdir()}
    again = run_pipeline(PIPELINE.with_stage(LengthFilter(500), after="dedup"), _cfg(cut), resume=True, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in (cut / "dedup" / "_done").iterdir()} == dedup_markers
    shorter = {s: r["stages"]["length_filter"]["removed"].get("shorter_than_500", 0)
               for s, r in again["sources"].items()}
    assert shorter == {s: _short_docs(out / "dedup", 500).get(s, 0) for s in again["sources"]}
    assert again["totals"]["kept"] > report["totals"]["kept"]


def test_config_hashes_chain_through_the_pipeline(tmp_path):
    cfg = _cfg(tmp_path)
    # the built-in stages hash exactly what they hand-listed before the contract (markers stay valid)
    sections = ["ingest", "heuristic_filter", "dedup", "quality_filter", "tokenize"]
    for i, name in enumerate(sections):
        listed = sections[: i + 1] + (["shards"] if name == "tokenize" else [])
        assert PIPELINE.config_hash(cfg, name) == cfg.section_hash(*listed)
    a = PIPELINE.with_stage(LengthFilter(1000), after="dedup")
    b = PIPELINE.with_stage(LengthFilter(2000), after="dedup")
    assert a.config_hash(cfg, "dedup") == b.config_hash(cfg, "dedup") == PIPELINE.config_hash(cfg, "dedup")
    for later in ("length_filter", "quality_filter", "tokenize"):  # a changed upstream parameter invalidates
        assert a.config_hash(cfg, later) != b.config_hash(cfg, later)
    other = _cfg(tmp_path, "dedup.bands=9", "dedup.rows=14")
    assert PIPELINE.config_hash(other, "heuristic_filter") == PIPELINE.config_hash(cfg, "heuristic_filter")
    assert PIPELINE.config_hash(other, "tokenize") != PIPELINE.config_hash(cfg, "tokenize")


def test_documents_are_read_where_the_pipeline_put_them(tmp_path):
    cfg = _cfg(tmp_path, "heuristic_filter.apply_to=[zyda]")
    assert PIPELINE.docs_folder(cfg, "dedup", "zyda") == "heuristic_filter"
    assert PIPELINE.docs_folder(cfg, "dedup", "dclm") == "ingest"  # a source a stage does not touch is not copied
    assert PIPELINE.docs_folder(cfg, "tokenize", "dclm") == "dedup"  # quality_filter does not apply to dclm
    assert PIPELINE.docs_folder(cfg, "shards", "fwe") == "quality_filter"  # tokenize writes shards, not documents
    assert PIPELINE.doc_stages() == ("ingest", "heuristic_filter", "dedup", "quality_filter")


def test_fused_stages_write_what_unfused_stages_write(local_run, tmp_path, capsys):
    run, report = local_run
    out = tmp_path / "fused"
    fused = run_pipeline(PIPELINE, _cfg(out, "ray.fuse_partition_stages=true"))
    assert fused == report
    assert files_digest(out) == files_digest(run)
    err = capsys.readouterr().err
    assert re.search(r"\[1-2/6 ingest\+heuristic_filter\] (\d+)/\1 partitions", err)
    assert "[5/6 tokenize]" in err  # the quality filter runs on actors: it cuts the fused runs


# sha256 over every output of the local recipe on the shared fixtures (files_digest: all but the
# manifest, logs and marker timings; the data folder reads as a placeholder). Re-pinned (issue 18) when
# the stages after ingest began storing selections instead of copies (only their own folders changed),
# for zstd level 3 (every parquet file's bytes, not its contents), for the config hash in
# dedup/summary.json when ingest gained `split_mb`, and when the tokenize stage started writing the
# shards itself: no tokenize/<source>/<part>.parquet, a train/anneal/val shard per planned shard
# (planned by characters), tokenize markers with `docs_anneal` and `shard`; each component's documents
# per role, in order, and its shares of every blend unchanged; and when the Hub parquet of a subfolder's
# consecutive inputs came to share a file (the same rows, in order); and when small files of a subfolder
# began to be read as one partition (ingest.bundle_mb: 8 partitions for the 11 fixture files, selections
# naming src_file too, signatures with src_file, ingest markers counting each bundled file; the same
# documents, ids, decisions and token stream, the zyda component in one shard per role instead of two,
# test_bundle.py); and when a bundle's marker began to hash its files' paths relative to the source
# folder, not absolute (CI's checkout, with the data elsewhere, wrote other marker bytes; the same tree
# from any data folder now, test_grouping_moves_no_byte). Markers count without their config hash,
# which hashes the quality model's absolute path (a checkout elsewhere has another); the hashes
# themselves are pinned by test_config_hashes_chain_through_the_pipeline.
TREE_SHA256 = "96619febdac8e420c28c4008ba30c7cdcf0b8719713eb12c821de7c2e75e8f1f"


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    data = str(DATA).encode()
    for rel, content in sorted(files_digest(root).items()):
        if Path(rel).parent.name == "_done":
            marker = json.loads(content)
            marker.pop("config_hash")
            content = json.dumps(marker, sort_keys=True).encode()
        h.update(rel.encode() + b"\0" + hashlib.sha256(content.replace(data, b"<data>")).digest())
    return h.hexdigest()


def test_outputs_are_byte_identical_to_the_pinned_tree(local_run):
    run, _ = local_run
    assert tree_hash(run) == TREE_SHA256, "the local recipe's outputs changed: if on purpose, say why and re-pin"
