"""Configs are validated on load: every mistake is one ConfigError naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.core.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_shipped_configs_load_and_carry_the_recipe(data_dir):
    full = load_config(REPO / "configs" / "zyda2.yaml")
    local = load_config(REPO / "configs" / "local.yaml")
    for cfg in (full, local):
        d = cfg.dedup
        assert ((d.shingle, d.ngram, d.num_hashes, d.hash_bits, d.seed, d.bands, d.rows)
                == ("char", 25, 128, 32, 10, 8, 16))
        assert d.mode == "cross" and d.source_rank == ["fwe", "dclm", "zyda", "dolma-cc"]
        assert cfg.quality_filter.apply_to == ["zyda", "dolma-cc"] and cfg.quality_filter.keep_labels == ["High"]
        assert cfg.quality_filter.fwe_min_int_score == 3
        assert cfg.shards.pretrain_weights == {"dclm": 4.0, "fwe": 4.0, "zyda": 0.16, "dolma-cc": 0.24}
    assert full.quality_filter.backend == "deberta" and full.quality_filter.max_chars == 6000
    assert local.quality_filter.backend == "fasttext"  # no DeBERTa weights offline
    assert full.sources["fwe"].path == "hf://datasets/HuggingFaceFW/fineweb-edu-score-2"
    assert full.ray.address is None and full.input_dir is None
    assert Path(local.sources["dclm"].path) == (data_dir / "sources" / "dclm").resolve()
    assert local.sources["dolma-cc"].files_from is None


@pytest.mark.parametrize("text, message", [
    ("ingest: {batch_sise: 3}", "ingest.batch_sise: unknown key"),
    ("bogus: 1", "bogus: unknown key"),
    ("ingest: {batch_docs: abc}", "ingest.batch_docs: expected int, got str 'abc'"),
    ("ingest: {batch_docs: true}", "ingest.batch_docs: expected int"),
    ("ingest: {batch_docs: 0}", "ingest.batch_docs: must be > 0"),
    ("ingest: {bundle_mb: -1}", "ingest.bundle_mb: must be >= 0 or null"),
    ("ray: [1, 2]", "ray: expected a mapping"),
    ("sources: {dclm: {include: ['*.zst']}}", "sources.dclm.path: required key is missing"),
    ("sources: {dclm: {path: /no/such/folder}}", "sources.dclm.path: folder does not exist: /no/such/folder"),
    ("sources: {c4: {path: /tmp}}", "sources.c4: unknown source"),
    ("dedup: {bands: 9}", "dedup.bands: bands x rows (9 x 16) must not exceed num_hashes (128)"),
    ("dedup: {verify_threshold: 1.5}", "dedup.verify_threshold: must be in (0, 1]"),
    ("dedup: {mode: some}", "dedup.mode: 'some' is not one of cross, all"),
    ("dedup: {source_rank: [fwe, c4]}", "dedup.source_rank: unknown source 'c4'"),
    ("input_dir: ${NO_SUCH_VAR_ZYDA2}", "input_dir: environment variable NO_SUCH_VAR_ZYDA2 is not set"),
    ("[1, 2]", "top level must be a mapping"),
    ("a: [", "invalid YAML"),
])
def test_mistakes_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)


def test_base_chain_env_and_overrides(tmp_path, monkeypatch):
    (tmp_path / "src" / "dclm").mkdir(parents=True)
    write(tmp_path, "ingest: {batch_docs: 100, excerpt_chars: 50}\ndedup: {seed: 1}", "base.yaml")
    child = write(tmp_path, "base: base.yaml\ninput_dir: ${ZYDA2_TEST_ROOT:-nowhere}\n"
                            "sources: {dclm: {path: dclm}}\ningest: {batch_docs: 200}")
    monkeypatch.setenv("ZYDA2_TEST_ROOT", str(tmp_path / "src"))
    cfg = load_config(child, ["dedup.seed=7", "ingest.max_files_per_source=2"])
    assert cfg.ingest.batch_docs == 200 and cfg.ingest.excerpt_chars == 50  # merged, child wins
    assert cfg.dedup.seed == 7 and cfg.ingest.max_files_per_source == 2
    assert cfg.sources["dclm"].path == str(tmp_path / "src" / "dclm")
    with pytest.raises(ConfigError, match="--set 'seed': expected key=value"):
        load_config(child, ["seed"])
    with pytest.raises(ConfigError, match="dedup.sed: unknown key"):
        load_config(child, ["dedup.sed=3"])


def test_circular_base_is_an_error(tmp_path):
    write(tmp_path, "base: b.yaml", "a.yaml")
    write(tmp_path, "base: a.yaml", "b.yaml")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_config_hash_tracks_content(tmp_path):
    a = load_config(REPO / "configs" / "zyda2.yaml")
    b = load_config(REPO / "configs" / "zyda2.yaml", ["dedup.seed=11"])
    assert a.hash() != b.hash() and a.hash() == load_config(REPO / "configs" / "zyda2.yaml").hash()
    assert a.section_hash("ingest") == b.section_hash("ingest") and a.section_hash("dedup") != b.section_hash("dedup")


def test_input_reroots_every_source_of_the_hub_recipe(data_dir):
    """`run configs/zyda2.yaml --input DIR` reads all four sources from DIR, none from the Hub or the web,
    and finds the same files as the local recipe does in the same folder."""
    from pipelines.ingest.discover import discover
    hub = load_config(REPO / "configs" / "zyda2.yaml", input_dir=str(data_dir / "sources"))
    for name, src in hub.sources.items():
        assert src.path.startswith(str(data_dir / "sources") + "/") and src.files_from is None, name
    local = load_config(REPO / "configs" / "local.yaml", input_dir=str(data_dir / "sources"))
    files = [(f.source, f.rel) for sf in discover(hub) for f in sf.files]  # a bundle's files too
    assert files == [(f.source, f.rel) for sf in discover(local) for f in sf.files]
    assert len(files) >= 10


def test_input_refuses_what_it_cannot_reroot(tmp_path):
    child = write(tmp_path, f"base: {REPO / 'configs' / 'local.yaml'}\nsources: {{dclm: {{path: {tmp_path}}}}}\n")
    with pytest.raises(ConfigError, match=r"^--input \S+: sources.dclm.path is the absolute path .* cannot re-root"):
        load_config(child, input_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--input hf://x: must be a local folder"):
        load_config(REPO / "configs" / "zyda2.yaml", input_dir="hf://x")


def test_base_paths_resolve_against_their_own_file(tmp_path):
    (tmp_path / "a" / "src" / "dclm").mkdir(parents=True)
    (tmp_path / "a" / "models").mkdir()
    (tmp_path / "a" / "models" / "q.ftz").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    write(tmp_path / "a", "input_dir: src\noutput_dir: ../runs/x\nsources: {dclm: {path: dclm}}\n"
                          "quality_filter: {backend: fasttext, model: models/q.ftz, apply_to: [zyda]}\n", "base.yaml")
    cfg = load_config(write(tmp_path / "b", "base: ../a/base.yaml\ningest: {batch_docs: 7}\n"))
    assert cfg.input_dir == str(tmp_path / "a" / "src") and cfg.output_dir == str(tmp_path / "runs" / "x")
    assert cfg.sources["dclm"].path == str(tmp_path / "a" / "src" / "dclm")
    assert cfg.quality_filter.model == str(tmp_path / "a" / "models" / "q.ftz")
    # a base without input_dir: its source paths are relative to its own folder; the child's own keys to the child's
    write(tmp_path / "a", "sources: {dclm: {path: src/dclm}}\n", "base2.yaml")
    (tmp_path / "b" / "out").mkdir()
    cfg = load_config(write(tmp_path / "b", "base: ../a/base2.yaml\noutput_dir: out\n", "c2.yaml"))
    assert cfg.sources["dclm"].path == str(tmp_path / "a" / "src" / "dclm")
    assert cfg.output_dir == str(tmp_path / "b" / "out")
