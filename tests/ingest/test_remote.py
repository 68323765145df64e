"""Remote reads survive the network: a loopback server injects 5xx, 429 + Retry-After, resets, cut and
slow bodies; the outputs are byte-identical to a clean read, and a host that stays down stops the run
with one line naming the URL, after which `--resume` finishes it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import pipelines.ingest.readers as readers
import pipelines.ingest.remote as remote
from pipelines.core.config import IngestConfig
from pipelines.core.sources import SourceFile
from pipelines.ingest.remote import RemoteReadError, RetryPolicy
from pipelines.ingest.stage import ingest_file
from tests.conftest import REPO, files_digest, run_local
from tests.ingest.fault_server import FaultServer

FILES = {"dolma-cc": ["cc_en_head/cc_en_head-0000.json.gz", "cc_en_middle/cc_en_middle-0000.json.gz"],
         "fineweb-edu": ["data/CC-MAIN-2023-50/train-00000-of-00001.parquet"]}
FAULTS = {0: "503", 1: "429:0", 2: "reset", 3: "cut", 4: "slow", 5: "502", 6: "cut", 7: "429:1", 8: "cut", 9: "429:1",
          10: "429:1", 11: "cut", 13: "500", 16: "cut"}


@pytest.fixture(scope="module")
def served(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    for folder, rels in FILES.items():
        for rel in rels:
            (root / folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data_dir / "sources" / folder / rel, root / folder / rel)
    with FaultServer(root) as server:
        yield server, root


def _ingest(sf: SourceFile, out, policy=RetryPolicy(retries=10, backoff_s=0.01, max_backoff_s=0.05, timeout_s=2)):
    stats = ingest_file(sf, IngestConfig(batch_docs=256), out, network=policy)
    return stats, files_digest(out)


@pytest.mark.parametrize("folder,rel", [(f, r) for f, rels in FILES.items() for r in rels])
def test_faulty_reads_give_the_bytes_of_a_clean_read(served, tmp_path, monkeypatch, folder, rel):
    server, root = served
    source, fmt = ("dolma-cc", "jsonl.gz") if folder == "dolma-cc" else ("fwe", "parquet")
    monkeypatch.setattr(readers, "READ_BUFFER", 64 << 10)  # many range requests per file
    waits = []
    monkeypatch.setattr(remote, "_sleep", waits.append)
    local = SourceFile(source, str(root / folder / rel), rel, fmt, "p", 0)
    clean_stats, clean = _ingest(local, tmp_path / "local")
    url = SourceFile(source, f"{server.url}/{folder}/{rel}", rel, fmt, "p", 0)
    server.reset(FAULTS)
    faulty_stats, faulty = _ingest(url, tmp_path / "remote")
    assert faulty_stats == clean_stats and faulty == clean
    injected = [f for *_, f in server.log if f]
    assert len(injected) >= 6  # the faults really happened, and were survived
    # Retry-After honoured on every 429 that reached us (fsspec answers a failed HEAD with a GET itself)
    assert waits.count(1.0) == sum(1 for _, method, _, f in server.log if f == "429:1" and method == "GET") >= 1
    assert all(0 <= w <= 0.05 or w == 1 for w in waits)
    ranges = [r for _, method, r, f in server.log if method == "GET" and not f]
    starts = [int(r.split("=")[1].split("-")[0]) for r in ranges if r]
    assert starts == sorted(starts) or fmt == "parquet"  # JSON lines: each byte range read once, in order


def test_a_stalled_body_times_out_and_is_read_again(served, tmp_path, monkeypatch):
    server, root = served
    monkeypatch.setattr(remote, "_sleep", lambda s: None)
    rel = FILES["dolma-cc"][0]
    _, clean = _ingest(SourceFile("dolma-cc", str(root / "dolma-cc" / rel), rel, "jsonl.gz", "p", 0), tmp_path / "a")
    server.reset({1: "stall:1.5"})
    _, faulty = _ingest(SourceFile("dolma-cc", f"{server.url}/dolma-cc/{rel}", rel, "jsonl.gz", "p", 0), tmp_path / "b",
                        RetryPolicy(retries=3, backoff_s=0, max_backoff_s=0, timeout_s=0.5))
    assert faulty == clean and [f for *_, f in server.log if f] == ["stall:1.5"]


def test_a_server_without_range_support_is_read_as_a_stream(served, tmp_path, monkeypatch):
    """A resume then starts again from byte 0 and skips to the offset: slower, still exact."""
    server, root = served
    monkeypatch.setattr(readers, "READ_BUFFER", 64 << 10)
    monkeypatch.setattr(remote, "_sleep", lambda s: None)
    rel = FILES["dolma-cc"][1]
    _, clean = _ingest(SourceFile("dolma-cc", str(root / "dolma-cc" / rel), rel, "jsonl.gz", "p", 0), tmp_path / "a")
    server.reset({1: "cut", 3: "cut", 4: "503", 5: "cut"}, ranges=False)
    _, faulty = _ingest(SourceFile("dolma-cc", f"{server.url}/dolma-cc/{rel}", rel, "jsonl.gz", "p", 0), tmp_path / "b")
    hits = [f for *_, f in server.log if f]
    assert faulty == clean and len(hits) >= 3 and "cut" in hits


def test_a_host_that_stays_down_is_one_line_naming_the_url(served, tmp_path, monkeypatch):
    server, _ = served
    monkeypatch.setattr(remote, "_sleep", lambda s: None)
    rel = FILES["dolma-cc"][0]
    url = f"{server.url}/dolma-cc/{rel}"
    server.reset(always={f"/dolma-cc/{rel}": 503})
    with pytest.raises(RemoteReadError) as e:
        _ingest(SourceFile("dolma-cc", url, rel, "jsonl.gz", "p", 0), tmp_path, RetryPolicy(retries=3, backoff_s=0))
    assert str(e.value) == (f"cannot read {url} after 3 retries (last: HTTP 503); "
                            "check the network, then rerun with --resume")
    assert sum(1 for _, method, *_ in server.log if method == "GET") == 4  # 1 try + 3 retries (each after a HEAD)
    assert not (tmp_path / "quarantine").exists()  # a network error is never a corrupt file


def test_not_found_is_not_retried(served, tmp_path):
    server, _ = served
    server.reset()
    url = f"{server.url}/dolma-cc/missing.json.gz"
    with pytest.raises(RemoteReadError, match=f"^cannot read {url}: HTTP 404$"):
        _ingest(SourceFile("dolma-cc", url, "missing.json.gz", "jsonl.gz", "p", 0), tmp_path)
    assert len(server.log) <= 2  # HEAD and fsspec's GET fallback, no retries


def test_retry_after_in_http_date_form():
    assert remote._retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert remote._retry_after("7") == 7.0 and remote._retry_after("soon") is None


def _remote_overrides(server, root, tmp_path, **network) -> list[str]:
    lists = []
    for folder, key in (("dolma-cc", "dolma-cc"), ("fineweb-edu", "fwe")):
        listing = tmp_path / f"{key}.txt"
        listing.write_text("".join(f"{server.url}/{folder}/{rel}\n" for rel in FILES[folder]))
        lists += [f"sources.{key}.path={server.url}/{folder}", f"sources.{key}.files_from={listing}"]
    return lists + ["sources.dclm.enabled=false", "sources.zyda.enabled=false", "network.backoff_s=0.01",
                    "network.max_backoff_s=0.05", "network.max_connections_per_host=1"] + \
        [f"network.{k}={v}" for k, v in network.items()]


def _outputs(out) -> dict:
    return {k: v for k, v in files_digest(out).items() if k.split("/")[0] in ("report.json", "shards", "tokenize")}


def test_a_faulty_run_is_byte_identical_to_a_clean_one_and_resumes(ray_instance, served, tmp_path):
    server, root = served
    overrides = _remote_overrides(server, root, tmp_path)
    server.reset()
    run_local(tmp_path / "clean", None, overrides)
    clean = _outputs(tmp_path / "clean")
    assert any(k.startswith("shards/") for k in clean) and "report.json" in clean
    assert server.max_files_at_once == 1  # network.max_connections_per_host

    server.reset(FAULTS)
    run_local(tmp_path / "faulty", None, overrides)
    assert _outputs(tmp_path / "faulty") == clean
    assert sum(1 for *_, f in server.log if f) >= 3 * 6  # faults on every file, all survived

    down = f"/dolma-cc/{FILES['dolma-cc'][1]}"
    server.reset(always={down: 503})
    with pytest.raises(RemoteReadError) as e:
        run_local(tmp_path / "resumed", None, overrides + ["network.retries=2"])
    assert str(e.value) == (f"cannot read {server.url}{down} after 2 retries (last: HTTP 503); check the network, "
                            "then rerun with --resume")
    server.reset()
    run_local(tmp_path / "resumed", None, overrides, resume=True)
    assert _outputs(tmp_path / "resumed") == clean


def test_the_cli_stops_with_exit_2_and_resumes_without_a_traceback(served, tmp_path):
    """As a user runs it: one line naming the URL, exit code 2; `--resume` through a faulty network
    finishes the run; neither run prints a traceback."""
    server, root = served
    down = f"/dolma-cc/{FILES['dolma-cc'][1]}"
    args = [sys.executable, str(REPO / "zyda2.py"), "run", str(REPO / "configs" / "local.yaml"),
            "--output", str(tmp_path / "out")]
    for item in _remote_overrides(server, root, tmp_path, retries=2):
        args += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server.reset(always={down: 503})
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 2
    assert f"zyda2: error: cannot read {server.url}{down} after 2 retries (last: HTTP 503)" in first.stderr
    server.reset(FAULTS)
    second = subprocess.run(args + ["--resume", "--set", "network.retries=10"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    for run in (first, second):
        assert "Traceback" not in run.stdout + run.stderr
