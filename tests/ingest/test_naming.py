"""One output partition per input file: names injective over any inputs, deterministic, and a refusal
at discovery (one line naming both files) where two inputs still could not be told apart."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipelines.ingest.discover as sources
from pipelines.core.config import Config, ConfigError, SourceConfig
from pipelines.core.sources import MAX_PART_NAME_BYTES, part_name
from pipelines.ingest.discover import discover

SEGMENT = st.lists(st.sampled_from(list("ab_.%#[] é-~()ü") + ["__", "%2F", "%25"]),
                   min_size=1, max_size=60).map("".join)
ENDING = st.sampled_from([".parquet", ".jsonl.zst", ".json.gz", ".jsonl", ""])
REL = st.builds(lambda parts, end: "/".join(parts) + end, st.lists(SEGMENT, min_size=1, max_size=4), ENDING)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(rels=st.sets(REL, min_size=2, max_size=12))
def test_part_names_are_injective_and_file_system_safe(rels):
    names = [part_name(r) for r in rels]
    assert len(set(names)) == len(rels)
    for name in names:
        assert "/" not in name and not name.startswith(".") and "\0" not in name
        assert len(name.encode()) <= MAX_PART_NAME_BYTES
        assert len(f"dolma-cc__{name}.parquet.tmp-4194304".encode()) + 1 <= 255


def test_the_kinds_of_ext_case_13_get_distinct_names():
    rels = ["part/train-00000.parquet", "part__train-00000.parquet", "x.jsonl.zst", "x.parquet", "a%2Fb.parquet",
            "a/b.parquet", "cc#en%20head 0003.json.gz", "cc_en_head[2].json.gz", "cc_en_héad-0001.json.gz"]
    names = {part_name(r) for r in rels}
    assert len(names) == len(rels)
    assert part_name("a/b.parquet") == "a%2Fb.parquet" and part_name("a%2Fb.parquet") == "a%252Fb.parquet"


def _cfg(root) -> Config:
    cfg = Config()
    cfg.sources = {"dclm": SourceConfig(str(root), include=["**/*.jsonl.zst", "**/*.parquet"])}
    cfg.ingest.bundle_mb = None  # one partition per file: its name is what is tested (bundles: test_bundle.py)
    return cfg


def test_discovery_is_deterministic_whatever_the_creation_order(tmp_path):
    rels = ["g/part/train-0.parquet", "g/part__train-0.parquet", "g/x.jsonl.zst", "g/x.parquet", "g/é [1].parquet",
            "g/a#b%20c.jsonl.zst"]
    listings = []
    for seed in range(3):
        root = tmp_path / str(seed)
        order = rels[:]
        random.Random(seed).shuffle(order)
        for rel in order:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(b"")
        listings.append([(f.rel, f.part_name, f.partition) for f in discover(_cfg(root))])
    assert listings[0] == listings[1] == listings[2]
    assert len({name for _, name, _ in listings[0]}) == len(rels)
    assert [p for _, _, p in listings[0]] == list(range(len(rels)))  # nemo_id partitions: one per file


def test_names_that_still_collide_are_refused_at_discovery(tmp_path, monkeypatch):
    for rel in ("a/b.parquet", "a__b.parquet"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    monkeypatch.setattr(sources, "part_name", lambda rel: "same")  # what only a sha256 prefix collision could do
    with pytest.raises(ConfigError) as e:
        discover(_cfg(tmp_path))
    assert str(e.value) == ("sources.dclm: inputs a/b.parquet and a__b.parquet would share the output name same; "
                            "rename one of them")
