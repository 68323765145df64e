"""A real multi-node Ray cluster on this machine: `ray start --head` and two `ray start --address`
workers (each its own raylet, object store and resources), the pipeline submitted to it as a Ray job
with `zyda2.py submit`, outputs compared byte for byte with the local run.

Every port is chosen free, every node shares a private `--temp-dir` and the cluster requires its
own auth token (Ray's token authentication, as a shared cluster should), so it cannot meet another
Ray instance on the machine; it is torn down by the PIDs of the processes its `ray start` commands
created (never `ray stop`, which ends every Ray process of the machine).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, files_digest

RAY = Path(sys.executable).parent / "ray"
PER_NODE_PORTS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                  "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class LocalCluster:
    """Head (no CPUs) plus workers with one CPU and their own custom resources, all on 127.0.0.1."""

    def __init__(self, workers: list[dict[str, float]]):
        # short root: Ray's Unix sockets live under it and must stay under 108 characters
        self.temp_dir = tempfile.mkdtemp(prefix="z2c", dir="/tmp")
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        token = Path(self.temp_dir) / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.token = token.read_text()
        # what the nodes and every client (zyda2.py submit, ray list) run with
        self.env = {**os.environ, "PATH": f"{RAY.parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.nodes: list[subprocess.Popen] = []
        self.worker_resources = workers

    def _start(self, *args: str) -> None:
        ports = [str(p) for pair in zip(PER_NODE_PORTS, free_ports(len(PER_NODE_PORTS))) for p in pair]
        log = open(Path(self.temp_dir) / f"node{len(self.nodes)}.log", "wb")
        # --block: the `ray start` process stays, the parent of its node's processes, until we end it
        self.nodes.append(subprocess.Popen(
            [str(RAY), "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}",
             "--object-store-memory=200000000", "--min-worker-port=0", "--max-worker-port=0",
             "--disable-usage-stats", *ports, *args],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True))

    def __enter__(self) -> "LocalCluster":
        try:
            self._start_all()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start_all(self) -> None:
        self._start("--head", f"--port={self.gcs_port}", f"--dashboard-port={self.dashboard_port}",
                    f"--ray-client-server-port={self.client_port}", "--dashboard-host=127.0.0.1",
                    "--include-dashboard=true", "--num-cpus=0")
        self._wait_nodes(1)
        for i, resources in enumerate(self.worker_resources):  # one at a time: joining together can time out
            self._start(f"--address=127.0.0.1:{self.gcs_port}", "--num-cpus=1",
                        f"--resources={json.dumps(resources)}")
            self.node_list = self._wait_nodes(2 + i)

    def state(self, resource: str) -> list[dict]:
        """`ray list RESOURCE` of this cluster (the state API, through its CLI and the cluster's token)."""
        out = subprocess.run([str(RAY), "list", resource, "--format=json", "--limit=10000",
                              f"--address={self.dashboard}"], env=self.env, capture_output=True, text=True,
                             timeout=120, check=True).stdout
        return json.loads(out)

    def _wait_nodes(self, n: int, timeout: float = 180.0) -> list[dict]:
        deadline, error = time.monotonic() + timeout, ""
        while True:
            dead = [p.args for p in self.nodes if p.poll() is not None]
            assert not dead, f"ray start exited: {dead}; logs in {self.temp_dir}"
            try:
                nodes = [node for node in self.state("nodes") if node["state"] == "ALIVE"]
                if len(nodes) == n:
                    return nodes
            except (subprocess.CalledProcessError, ValueError) as e:  # the dashboard is still starting
                error = str(getattr(e, "stderr", e))[-500:]
            assert time.monotonic() < deadline, f"{n} nodes not up after {timeout} s ({error}); logs in {self.temp_dir}"
            time.sleep(1)

    def processes(self) -> list[psutil.Process]:
        """Every process this cluster started: the `ray start` processes, their descendants, and any
        process naming the cluster's private temp dir (a worker whose parent already exited)."""
        procs = {}
        for node in self.nodes:
            try:
                root = psutil.Process(node.pid)
                for p in [root, *root.children(recursive=True)]:
                    procs[p.pid] = p
            except psutil.NoSuchProcess:
                pass
        for p in psutil.process_iter(["cmdline"]):
            if any(self.temp_dir in arg for arg in (p.info["cmdline"] or [])):
                procs[p.pid] = p
        return list(procs.values())

    def __exit__(self, *exc) -> None:
        procs = self.processes()
        for node in self.nodes:  # `ray start --block` stops its node's processes on SIGTERM
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=10)
        for node in self.nodes:
            node.wait(timeout=10)
        if not any(exc):  # on a failure the node logs stay for the message that names them
            shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.mark.ray
def test_pipeline_as_a_ray_job_on_three_nodes(local_run, data_dir, tmp_path):
    local_out, _ = local_run
    out = tmp_path / "cluster_run"
    submit = [sys.executable, "zyda2.py", "submit", "configs/local.yaml", "--input", str(data_dir / "sources"),
              "--output", str(out), "--set", "ray.stage_resources={dedup: {resources: {zyda2_dedup: 0.01}}}"]
    with LocalCluster([{"zyda2_dedup": 1}, {"zyda2_other": 1}]) as cluster:
        tokenless = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
        refused = subprocess.run([*submit, "--address", cluster.dashboard], cwd=REPO, env=tokenless,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "auth token" in refused.stderr and refused.stderr.count("\n") == 1

        result = subprocess.run([*submit, "--address", cluster.dashboard], cwd=REPO, env=cluster.env,
                                capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert re.search(r"job \S+: SUCCEEDED", result.stdout)

        # a job that fails on the cluster (its run folder is taken) fails the command, with the reason
        again = subprocess.run([*submit, "--address", cluster.dashboard], cwd=REPO, env=cluster.env,
                               capture_output=True, text=True, timeout=600)
        assert again.returncode == 1 and re.search(r"job \S+: FAILED", again.stdout)
        assert "already holds a run" in again.stdout

        assert cluster.token not in result.stdout + result.stderr

        tasks = [t for t in cluster.state("tasks") if t["type"] == "NORMAL_TASK" and t["state"] == "FINISHED"]
        head = {n["node_id"] for n in cluster.node_list if n["is_head_node"]}
        dedup_node = {n["node_id"] for n in cluster.node_list if "zyda2_dedup" in n["resources_total"]}
        other_node = {n["node_id"] for n in cluster.node_list if "zyda2_other" in n["resources_total"]}
        procs = cluster.processes()
        assert len(procs) > 6  # three raylets, a GCS, dashboard, agents, workers: what teardown must end

    # the stage tasks ran on both workers, never on the head; dedup's only where its resource is
    nodes_used = {t["node_id"] for t in tasks}
    assert nodes_used == dedup_node | other_node and not head & nodes_used
    dedup_tasks = [t for t in tasks if re.search(r"bucket_map|bucket_reduce|resolve_part|apply_group", t["name"])]
    assert dedup_tasks and {t["node_id"] for t in dedup_tasks} == dedup_node

    # torn down: none of the cluster's processes is left
    assert not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not [p for p in psutil.process_iter(["cmdline"])
                if any(cluster.temp_dir in arg for arg in p.info["cmdline"] or [])]

    assert files_digest(out) == files_digest(local_out)
