"""`zyda2.py publish`: the dataset card, offline loading with `datasets`, and uploads to a fake Hub.

Uploads run the real CLI in a subprocess against `FakeHub` (HF_ENDPOINT) with HF_HUB_DISABLE_XET=1:
the fake speaks the Hub API and git-LFS, not Xet storage.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.core.schema import QUALITY_SCHEMA
from pipelines.core.sources import COMPONENTS, INPUT_FOLDERS
from pipelines.release.publish import build_card, upload_plan, write_card
from tests.conftest import DATA, REPO
from tests.publish.fake_hub import FakeHub

TOKEN = "hf_FakeTokenForPublishTests0123456789"
REPO_ID = "zyda2-tests/zyda2-rebuild"


@pytest.fixture(scope="module")
def run_copy(local_run, tmp_path_factory) -> Path:
    """What publish reads of the session run, copied: the card is written into the run folder."""
    src, _ = local_run
    dest = tmp_path_factory.mktemp("publish_run")
    for name in ("manifest.json", "report.json"):
        shutil.copy(src / name, dest / name)
    for rel in ("ingest/_done", "publish"):
        shutil.copytree(src / rel, dest / rel)
    return dest


def cli(*args: str, hub: FakeHub | None = None, token: str | None = TOKEN, home: Path,
        xet: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1")
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    if hub is not None:
        env["HF_ENDPOINT"] = hub.url
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "zyda2.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def local_files(folder: Path) -> dict[str, bytes]:
    return {f.path_in_repo: (folder / f.path_in_repo).read_bytes() for f in upload_plan(folder)}


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_card_configs_match_the_layout_and_the_report(run_copy, local_run):
    _, report = local_run
    card = build_card(run_copy, REPO_ID)
    assert build_card(run_copy, REPO_ID) == card  # deterministic
    meta = front_matter(card)
    assert meta["license"] == "odc-by" and meta["task_categories"] == ["text-generation"]
    configs = {c["config_name"]: c["data_files"] for c in meta["configs"]}
    assert list(configs) == ["default", *COMPONENTS.values()]
    folder = run_copy / "publish"
    every = sorted(p.relative_to(folder).as_posix() for p in (folder / "data").rglob("*.parquet"))
    for name, files in configs.items():
        assert [f["split"] for f in files] == ["train"]
        matched = sorted(Path(p).relative_to(folder).as_posix() for p in glob.glob(str(folder / files[0]["path"])))
        assert matched == (every if name == "default" else [p for p in every if p.startswith(f"data/{name}/")])
    manifest = json.loads((run_copy / "manifest.json").read_text())
    assert f"`{manifest['config_hash']}`" in card and f"`{manifest['git_commit']}`" in card
    # every input file, a bundle's too (the fixtures' 11 files are read as 8 partitions)
    inputs = sorted(p for p in (DATA / "sources").rglob("*") if p.is_file())
    assert len(inputs) == 11 and f"read from {len(inputs)} input files" in card
    for p in inputs:
        source = next(s for s, folder in INPUT_FOLDERS.items() if p.is_relative_to(DATA / "sources" / folder))
        assert f"- {source}: `{p.relative_to(DATA / 'sources' / INPUT_FOLDERS[source]).as_posix()}`" in card
    for source, r in report["sources"].items():
        for key, n in r["removed"].items():
            stage, reason = key.split(":", 1)
            assert f"| {source} | {stage} | {reason} | {n:,} |" in card


def test_published_folder_loads_offline_for_every_config(run_copy, local_run, tmp_path, monkeypatch):
    import datasets
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    _, report = local_run
    folder = write_card(run_copy, REPO_ID)
    published = {c: v["published_documents"] for c, v in report["details"]["shards"]["components"].items()}
    configs = [c["config_name"] for c in front_matter((folder / "README.md").read_text())["configs"]]
    for name in configs:
        ds = datasets.load_dataset(str(folder), name=name, split="train", cache_dir=str(tmp_path / "cache"))
        assert ds.column_names == QUALITY_SCHEMA.names
        assert ds.num_rows == (sum(published.values()) if name == "default" else published[name]), name
        if name != "default":
            assert set(ds.unique("source")) == {s for s, c in COMPONENTS.items() if c == name}


@pytest.mark.parametrize("transfer", ["lfs", "inline"])
def test_upload_lands_every_file_and_a_rerun_sends_nothing(run_copy, tmp_path, transfer):
    """lfs: parquet through git-LFS batch + PUT, hf_xet off. inline: the default client (hf_xet on,
    streamed multi-commit upload, as in production) with a Hub that takes every file inline."""
    lfs = transfer == "lfs"
    with FakeHub(TOKEN, lfs=lfs) as hub:
        first = cli("publish", str(run_copy), "--repo", REPO_ID, "--private", hub=hub, home=tmp_path, xet=not lfs)
        assert first.returncode == 0, first.stderr
        repo = hub.repos[REPO_ID]
        assert repo["private"]
        assert repo["files"] == local_files(run_copy / "publish")
        parquet = {hashlib.sha256(b).hexdigest() for p, b in repo["files"].items() if p.endswith(".parquet")}
        assert {r["oid"] for r in hub.requests("PUT")} == (parquet if lfs else set())
        assert all(r["authorization"] == f"Bearer {TOKEN}" for r in hub.log if r["path"].startswith("/api/datasets"))
        puts, commits = len(hub.requests("PUT")), len(hub.requests("POST", "/commit/"))
        assert commits >= 1
        again = cli("publish", str(run_copy), "--repo", REPO_ID, hub=hub, home=tmp_path, xet=not lfs)
        assert again.returncode == 0, again.stderr
        assert len(hub.requests("PUT")) == puts and len(hub.requests("POST", "/commit/")) == commits
        assert repo["files"] == local_files(run_copy / "publish")


def test_interrupted_upload_resumes_without_resending_finished_files(run_copy, tmp_path):
    with FakeHub(TOKEN, fail_after=3) as hub:
        cut = cli("publish", str(run_copy), "--repo", REPO_ID, hub=hub, home=tmp_path)
        assert cut.returncode == 2
        errors = [line for line in cut.stderr.splitlines() if line.startswith("zyda2: error: ")]
        assert len(errors) == 1 and errors[0].startswith("zyda2: error: upload to ")
        assert "run the same command again to resume" in errors[0]
        assert "Traceback" not in cut.stderr
        assert len(hub.lfs) == 3 and not hub.repos[REPO_ID]["files"]
        done = {r["oid"] for r in hub.requests("PUT") if not r.get("refused")}
        n = len(hub.log)

        hub.fail_after = None
        resumed = cli("publish", str(run_copy), "--repo", REPO_ID, hub=hub, home=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        resent = {r["oid"] for r in hub.log[n:] if r["method"] == "PUT"}
        assert len(done) == 3 and not done & resent
        expected = local_files(run_copy / "publish")
        assert done | resent == {hashlib.sha256(b).hexdigest()
                                 for p, b in expected.items() if p.endswith(".parquet")}
        assert hub.repos[REPO_ID]["files"] == expected


def test_token_never_reaches_outputs_or_logs(run_copy, tmp_path):
    with FakeHub(TOKEN, fail_after=2) as hub:
        runs = [cli("-v", "publish", str(run_copy), "--repo", REPO_ID, hub=hub, home=tmp_path)]
        hub.fail_after = None
        runs.append(cli("-v", "publish", str(run_copy), "--repo", REPO_ID, hub=hub, home=tmp_path))
        assert [r.returncode for r in runs] == [2, 0]
        assert any(r["authorization"] == f"Bearer {TOKEN}" for r in hub.log)  # the token was in use
    for r in runs:
        assert TOKEN not in r.stdout and TOKEN not in r.stderr
        assert "DEBUG" in r.stderr  # debug logging of the HTTP client was on
    for path in run_copy.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_dry_run_makes_no_request(run_copy, tmp_path):
    with FakeHub(TOKEN) as hub:
        out = cli("publish", str(run_copy), "--repo", REPO_ID, "--dry-run", hub=hub, home=tmp_path)
        assert out.returncode == 0, out.stderr
        assert hub.log == []
    plan = upload_plan(run_copy / "publish")
    assert {f.path_in_repo for f in plan} == {"README.md"} | {
        p.relative_to(run_copy / "publish").as_posix() for p in (run_copy / "publish" / "data").rglob("*.parquet")}
    for f in plan:
        assert f"{f.size:>15,}  {f.path_in_repo}" in out.stdout
    assert f"would upload {len(plan)} files ({sum(f.size for f in plan):,} bytes)" in out.stdout


@pytest.mark.parametrize("args,token,message", [
    (["--repo", REPO_ID], None, "no Hugging Face token: run `hf auth login` or set HF_TOKEN"),
    (["--repo", REPO_ID], "hf_wrong", "the Hub refused the token (HTTP 401)"),
    (["--repo", "no-namespace"], TOKEN, "--repo must be ORG/NAME"),
])
def test_user_mistakes_are_one_line_errors(run_copy, tmp_path, args, token, message):
    with FakeHub(TOKEN) as hub:
        out = cli("publish", str(run_copy), *args, hub=hub, token=token, home=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("zyda2: error: ") and message in out.stderr and len(out.stderr.splitlines()) == 1
    assert not hub.repos


def test_unfinished_or_foreign_folders_are_refused(tmp_path):
    from pipelines.release.publish import PublishError
    with pytest.raises(PublishError, match="not a zyda2 run folder"):
        write_card(tmp_path, REPO_ID)
    (tmp_path / "manifest.json").write_text('{"status": "running"}')
    with pytest.raises(PublishError, match=r"not a finished run \(status 'running'\).*--resume"):
        write_card(tmp_path, REPO_ID)
    (tmp_path / "manifest.json").write_text('{"status": "done"}')
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(PublishError, match="holds no parquet files.*shards.publish_parquet: true"):
        write_card(tmp_path, REPO_ID)


def test_hub_files_pack_consecutive_inputs_of_a_subfolder(local_run):
    """Thousands of small inputs must not make thousands of Hub files: a file holds consecutive
    partitions of one subfolder up to `shards.publish_mb`; every kept document is published once, in order."""
    import pyarrow.parquet as pq

    from pipelines.core.config import config_from_dict
    from pipelines.core.schema import read_folder
    from pipelines.ingest.discover import discover
    from pipelines.tokens.shards import publish_plan
    out, report = local_run
    cfg = config_from_dict(json.loads((out / "manifest.json").read_text())["config"],
                           ["ingest.bundle_mb=null"])  # a partition per file: more of them to pack
    files = discover(cfg)
    plan = publish_plan(files, [100] * len(files), 250)  # 100 characters each: files of 3 partitions
    assert sorted(i for _, _, idx in plan for i in idx) == list(range(len(files)))
    for _, sub, idx in plan:
        assert len(idx) <= 3 and idx == list(range(idx[0], idx[0] + len(idx)))  # consecutive
        assert len({(files[i].source, sub) for i in idx}) == 1
    assert len(publish_plan(files, [100] * len(files), 1e12)) < len(files)
    for source, component in COMPONENTS.items():
        last = "dedup" if source == "dclm" else "quality_filter"
        published = pq.read_table(sorted((out / "publish" / "data" / component).rglob("*.parquet")),
                                  columns=["nemo_id"]).column("nemo_id").to_pylist()
        kept = read_folder(out / last / source, ["nemo_id"]).column("nemo_id").to_pylist()
        assert sorted(published) == sorted(kept) and len(published) == report["sources"][source]["kept"]
