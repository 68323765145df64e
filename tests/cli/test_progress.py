"""Progress on a terminal: every stage says `k/N`, its closing figures equal report.json, and the
end-of-run summary says where everything is. Captured from a pseudo-terminal, on input that mixes
the fixtures with broken files (so ingest's counts include quarantined records)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys

import pytest

from tests.conftest import REPO

BAD = {"dclm": ["dclm_malformed_line.jsonl.zst", "dclm_invalid_utf8.jsonl.zst"],
       "dolma-cc": ["dolma_truncated.json.gz"]}


def run_on_pty(argv: list[str], timeout: float = 600) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return (exit code, everything it drew)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "zyda2.py", *argv], cwd=REPO, stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        assert ready, "no output for too long"
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode()


@pytest.fixture(scope="module")
def pty_run(data_dir, tmp_path_factory):
    inp = tmp_path_factory.mktemp("mixed")
    for folder in ("dclm", "fineweb-edu", "zyda", "dolma-cc"):
        (inp / folder).symlink_to(data_dir / "sources" / folder, target_is_directory=True)
    for folder, names in BAD.items():  # a real folder of links: the fixtures' files plus broken ones
        (inp / folder).unlink()
        (inp / folder).mkdir()
        for p in (data_dir / "sources" / folder).iterdir():
            (inp / folder / p.name).symlink_to(p, target_is_directory=p.is_dir())
        for name in names:
            (inp / folder / name).symlink_to(data_dir / "sources_bad" / name)
    out = tmp_path_factory.mktemp("pty") / "run"
    code, text = run_on_pty(["run", "configs/local.yaml", "--input", str(inp), "--output", str(out),
                             "--set", "ingest.max_docs_per_file=60"])
    assert code == 0, text[-3000:]
    return out, text, json.loads((out / "report.json").read_text())


def screen_lines(text: str) -> list[str]:
    """What stays on the screen: each carriage return redraws its line, ESC[K clears the rest."""
    lines = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        lines.append(raw.split("\r")[-1].replace("\x1b[K", "").rstrip())
    return [line for line in lines if line]


def stage_total(report: dict, stage: str, key: str, touched_only: bool = False) -> int:
    rows = [r["stages"][stage] for r in report["sources"].values() if stage in r["stages"]]
    if touched_only:
        rows = [r for r in rows if not r.get("untouched")]
    if key == "removed":
        return sum(sum(r["removed"].values()) for r in rows)
    return sum(r[key] for r in rows)


def test_every_stage_line_equals_the_report(pty_run):
    _, text, report = pty_run
    lines = screen_lines(text)
    stages = report["stages"]
    for k, stage in enumerate(stages, 1):
        label = f"[{k}/{len(stages)} {stage}]"
        mine = [line for line in lines if line.startswith(label)]
        assert mine, f"no line for {stage}"
        if all(r["stages"][stage].get("untouched") for r in report["sources"].values()):
            assert mine == [f"{label} nothing to do: no partition goes through this stage"]
            continue
        done = [line for line in mine if " done in " in line]
        assert len(done) == 1, mine
        figures = re.search(r"([\d,]+) docs in, ([\d,]+) out, ([\d,]+) removed, ([\d,]+) quarantined", done[0])
        got = [int(g.replace(",", "")) for g in figures.groups()]
        assert got == [stage_total(report, stage, key) for key in ("in", "out", "removed", "quarantined")]
        bars = [line for line in mine if " partitions | " in line]
        if bars:  # the closing progress line counts what the stage itself processed
            docs = int(re.search(r"\| ([\d,]+) docs \|", bars[-1]).group(1).replace(",", ""))
            assert docs == stage_total(report, stage, "in", touched_only=True), bars[-1]
            assert re.search(r"(\d+)/\1 partitions", bars[-1]) and bars[-1].endswith("| done")
            assert re.search(r"[\d.]+ MB/s", bars[-1])
    assert report["totals"]["quarantined"] > 0  # the broken files were read, and counted live as in the report


def test_summary_says_where_everything_is(pty_run):
    out, text, report = pty_run
    lines = screen_lines(text)
    t = report["totals"]
    head = next(line for line in lines if line.startswith("read "))
    assert head.startswith(f"read {t['read']:,} docs: kept {t['kept']:,}, removed {t['removed']:,}, "
                           f"quarantined {t['quarantined']:,} | wall time ")
    quarantine = next(line for line in lines if line.startswith("quarantined: "))
    reasons = {}
    for r in report["sources"].values():
        for reason, n in r["quarantine_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    assert all(f"{reason} {n:,}" in quarantine for reason, n in reasons.items())
    assert f"{out}/quarantine/" in quarantine
    components = report["details"]["shards"]["components"]
    tokens = next(line for line in lines if line.startswith("tokens: "))
    assert all(f"{name} {c['train_tokens'] + c['val_tokens']:,}" in tokens for name, c in components.items())
    for where in (f"{out}/shards/", f"{out}/shards/blends/pretrain.json", f"{out}/publish/data/",
                  f"{out}/report.json", f"python zyda2.py stats {out}"):
        assert where in text, where
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"][1:3] == ["zyda2.py", "run"] and manifest["status"] == "done"
    assert (out / "logs" / "run.log").read_text().count("attempt 1") == 2
