"""jobs/slurm.sbatch, run for real on this machine: `srun` and `scontrol` are stand-ins that run each
"node" here (with free ports, since three raylets share one host), everything else is the script's
own logic: head, two workers, waiting for them, the pipeline, and stopping exactly its Ray processes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO
from tests.jobs.test_cluster import PER_NODE_PORTS, free_ports

SCRIPT = REPO / "jobs" / "slurm.sbatch"

# srun -N1 -n1 -w NODE CMD...: run CMD here; a `ray start` gets ports and a temp dir of its own, as
# it would on its own host (raylets joining at once in one session folder race for socket names)
FAKE_SRUN = textwrap.dedent(f"""\
    #!{sys.executable}
    import os, socket, sys
    args, node = sys.argv[1:], None
    while args[0].startswith("-"):
        node, args = (args[1], args[2:]) if args[0] == "-w" else (node, args[1:])
    if "start" in args:
        args = [f"{{a}}/{{node}}" if a.startswith("--temp-dir=") else a for a in args]
        flags = {PER_NODE_PORTS!r} + (("--ray-client-server-port",) if "--head" in args else ())
        socks = [socket.socket() for _ in flags]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        args += [f"{{flag}}={{s.getsockname()[1]}}" for flag, s in zip(flags, socks)]
        args += ["--min-worker-port=0", "--max-worker-port=0", "--object-store-memory=200000000"]
        for s in socks:
            s.close()
    os.execvp(args[0], args)
""")
FAKE_SCONTROL = "#!/bin/sh\nprintf 'node0\\nnode1\\nnode2\\n'\n"


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.ray
def test_sbatch_script_starts_three_nodes_runs_and_stops_them(data_dir, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    temp_dir = tempfile.mkdtemp(prefix="z2s", dir="/tmp")  # Ray's Unix sockets: keep the path short
    token = Path(temp_dir) / "auth_token"
    token.write_text(secrets.token_hex(32))
    gcs, dashboard = free_ports(2)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node[0-2]",
           "SLURM_SUBMIT_DIR": str(REPO), "SLURM_CPUS_ON_NODE": "1", "ZYDA2_PYTHON": sys.executable,
           "RAY_TEMP_DIR": temp_dir, "RAY_PORT": str(gcs), "RAY_DASHBOARD_PORT": str(dashboard),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    out = tmp_path / "slurm_run"
    try:
        result = subprocess.run(["bash", str(SCRIPT), "configs/local.yaml", "--input", str(data_dir / "sources"),
                                 "--output", str(out), "--set", "ingest.max_docs_per_file=20", "--quiet"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        # the script must have stopped every Ray process it started; whatever is left, end it by PID
        left = [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in a for a in p.info["cmdline"] or [])]
        for p in left:
            p.kill()
        psutil.wait_procs(left, timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 Ray nodes up" in result.stdout
    assert not left, [p.info["cmdline"][:2] for p in left]
    # a small run (test_cluster.py compares a whole one byte for byte): every stage done, accounts balanced
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and set(manifest["stages"]) >= {"ingest", "dedup", "tokenize", "shards"}
    assert json.loads((out / "report.json").read_text())["totals"]["kept"] > 0
