"""`zyda2.py submit` without a cluster: the job's command line, its environment, the KubeRay manifest,
per-stage resources and object spilling."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

import zyda2
from jobs.submit import SubmitError, env_vars, job_args
from pipelines.cli.common import load_run_config
from pipelines.core.config import ConfigError, load_config
from pipelines.core.run import check_stage_names
from pipelines.pipeline import PIPELINE
from tests.conftest import REPO


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "zyda2.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_job_rebuilds_the_same_config_from_the_uploaded_copy(data_dir, tmp_path):
    """The job loads the config from a copy of the repository (Ray's working_dir) where `runs/` is not
    uploaded and relative paths point elsewhere: pinned absolute paths make it the same config."""
    cfg = load_config(REPO / "configs" / "local.yaml", ["ingest.batch_docs=512"],
                      input_dir=str(data_dir / "sources"), output_dir=str(tmp_path / "out"))
    args = job_args(cfg, REPO / "configs" / "local.yaml", ["ingest.batch_docs=512"])
    assert args[:3] == ["zyda2.py", "run", "configs/local.yaml"]

    copy = tmp_path / "working_dir"
    shutil.copytree(REPO / "configs", copy / "configs")
    job = zyda2.build_parser().parse_args(args[1:])
    job.config = str(copy / job.config)
    remote = load_run_config(job)
    assert remote.ray.address == "auto"
    assert remote.hash() == cfg.hash()
    assert remote.output_dir == cfg.output_dir and remote.ingest.batch_docs == 512
    assert remote.quality_filter.model == cfg.quality_filter.model  # not under the copy, which has no runs/


def test_config_outside_the_repository_is_refused(tmp_path):
    (tmp_path / "mine.yaml").write_text(f"base: {REPO / 'configs' / 'zyda2.yaml'}\n")
    cfg = load_config(tmp_path / "mine.yaml")
    with pytest.raises(SubmitError, match="inside"):
        job_args(cfg, tmp_path / "mine.yaml", [])


def test_credentials_never_go_into_the_runtime_env():
    assert env_vars(["HF_HOME=/cache", "A=b=c"]) == {"PYTHONUNBUFFERED": "1", "HF_HOME": "/cache", "A": "b=c"}
    for pair in ("HF_TOKEN=hf_x", "AWS_SECRET_ACCESS_KEY=s", "WANDB_API_KEY=k", "DB_PASSWORD=p"):
        with pytest.raises(SubmitError, match="credentials"):
            env_vars([pair])
    with pytest.raises(SubmitError, match="NAME=VALUE"):
        env_vars(["novalue"])
    r = _cli("submit", "configs/local.yaml", "--address", "http://127.0.0.1:1", "--env", "HF_TOKEN=hf_secret123")
    assert r.returncode == 2 and "hf_secret123" not in r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("zyda2: error: --env HF_TOKEN")


def test_unreachable_job_server_is_one_line():
    r = _cli("submit", "configs/local.yaml", "--address", "http://127.0.0.1:1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot reach the Ray job server" in r.stderr


def test_kuberay_rayjob_manifest(tmp_path):
    out = tmp_path / "rayjob.yaml"
    r = _cli("submit", "configs/zyda2.yaml", "--kuberay", str(out), "--working-dir-uri", "s3://b/zyda2.zip",
             "--output", "/data/zyda2", "--env", "HF_HOME=/data/hf", "--set", "ray.cluster.workers=3",
             "--set", "ray.cluster.worker_cpus=8", "--set", "ray.cluster.worker_memory_gb=32",
             "--set", "ray.cluster.worker_gpus=1", "--set", "ray.cluster.hf_token_secret=hf-token",
             "--set", "ray.cluster.shared_volume_claim=zyda2-data", "--set", "ray.spill_dir=/spill",
             "--set", "ray.object_store_mb=4096", "--set", "ray.cluster.worker_resources={bigmem: 1}",
             "--set", "ray.stage_resources={dedup: {memory_mb: 8000, resources: {bigmem: 0.25}}}")
    assert r.returncode == 0, r.stderr
    job = yaml.safe_load(out.read_text())
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == ("ray.io/v1", "RayJob", "zyda2")
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "zyda2.py", "run", "configs/zyda2.yaml"]
    assert "ray.address=auto" in argv and argv[argv.index("--output") + 1] == "/data/zyda2"
    assert "ray.stage_resources={dedup: {memory_mb: 8000, resources: {bigmem: 0.25}}}" in argv
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {
        "working_dir": "s3://b/zyda2.zip", "env_vars": {"PYTHONUNBUFFERED": "1", "HF_HOME": "/data/hf"}}
    assert spec["shutdownAfterJobFinishes"] is True

    head, (workers,) = spec["rayClusterSpec"]["headGroupSpec"], spec["rayClusterSpec"]["workerGroupSpecs"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["object-store-memory"] == str(4096 << 20)
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3
    assert json.loads(json.loads(workers["rayStartParams"]["resources"])) == {"bigmem": 1.0}
    assert workers["rayStartParams"]["object-spilling-directory"] == "/spill"
    (container,) = workers["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert container["env"] == [{"name": "HF_TOKEN",
                                 "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}}]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/data", "/spill"}
    volumes = {v["name"]: v for v in workers["template"]["spec"]["volumes"]}
    assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == "zyda2-data"

    r = _cli("submit", "configs/zyda2.yaml", "--kuberay", str(out), "--working-dir-uri", "s3://b/zyda2.zip",
             "--output", "/data/zyda2", "--sources", "dclm,fwe", "--allow-empty")
    assert r.returncode == 0, r.stderr
    argv = shlex.split(yaml.safe_load(out.read_text())["spec"]["entrypoint"])
    assert argv[-1] == "--allow-empty" and "sources.zyda.enabled=false" in argv and "sources.fwe.enabled=true" in argv

    r = _cli("submit", "configs/zyda2.yaml", "--kuberay", str(out))
    assert r.returncode == 2 and "--working-dir-uri" in r.stderr


def test_stage_resources_become_task_options():
    cfg = load_config(REPO / "configs" / "local.yaml",
                      ["ray.stage_resources={dedup: {num_cpus: 1, memory_mb: 100, resources: {bigmem: 0.5}}, "
                       "tokenize: {num_cpus: 0.25}}"])
    assert cfg.ray.task_options("dedup/signatures/char25_128h_32b_seed10") == \
        {"num_cpus": 1.0, "memory": 100 << 20, "resources": {"bigmem": 0.5}}
    assert cfg.ray.task_options("tokenize") == {"num_cpus": 0.25}
    assert cfg.ray.task_options("ingest") == {"num_cpus": 0.5}
    assert cfg.hash() == load_config(REPO / "configs" / "local.yaml").hash()  # where work runs is not what it makes
    for bad, msg in (("{dedup: {memory_mb: 0}}", "memory_mb"), ("{dedup: {gpus: 1}}", "unknown key")):
        with pytest.raises(ConfigError, match=msg):
            load_config(REPO / "configs" / "local.yaml", [f"ray.stage_resources={bad}"])
    # stage names are the pipeline's (pipelines/pipeline.py), checked before anything runs
    typo = load_config(REPO / "configs" / "local.yaml", ["ray.stage_resources={dedupe: {num_cpus: 1}}"])
    with pytest.raises(ConfigError, match="ray.stage_resources.dedupe: unknown stage \\(known: ingest, "
                                          "heuristic_filter, dedup, quality_filter, tokenize, shards\\)"):
        check_stage_names(PIPELINE, typo)


def test_spill_dir_receives_spilled_objects(tmp_path):
    """A local instance started by the runner spills to ray.spill_dir once its object store is full."""
    spill = tmp_path / "spill"
    code = f"""
import numpy as np, ray
from pipelines.core.config import load_config
from pipelines.core.run import ray_session
cfg = load_config("configs/local.yaml", ["ray.spill_dir={spill}", "ray.object_store_mb=80", "ray.num_cpus=1"])
with ray_session(cfg):
    refs = [ray.put(np.full(20 << 20, i, np.uint8)) for i in range(8)]
    assert [int(ray.get(r)[0]) for r in refs] == list(range(8))
    import pathlib
    print(sum(f.stat().st_size for f in pathlib.Path("{spill}").rglob("*") if f.is_file()))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) >= 20 << 20  # at least one 20 MB object went to disk there
