"""A KubeRay `RayJob` (apiVersion ray.io/v1) that runs the pipeline, sized from `ray.cluster`.

Why a RayJob: KubeRay creates the cluster, submits the entrypoint once every pod is up and deletes
the cluster when the job ends, so a run costs nodes only while it runs. Pods cannot see the
submitting machine, so the code comes from `working_dir_uri` (a zip of this repository on
https/s3/gs) on an image with the project's dependencies, and data and outputs from URLs or the
shared volume (`ray.cluster.shared_volume_claim`, mounted at `shared_mount` on every pod). The
Hugging Face token, when needed, comes from a Kubernetes Secret and never appears in the manifest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from jobs.cluster import ray_start_params
from jobs.submit import entrypoint
from pipelines.core.config import Config

RAY_VERSION = "2.60.0"


def _name(run_name: str) -> str:
    """A DNS-1123 name: what Kubernetes accepts for a resource."""
    name = re.sub(r"[^a-z0-9-]+", "-", run_name.lower()).strip("-")[:63].strip("-")
    return name or "zyda2"


def _start_params(cfg: Config, head: bool) -> dict[str, str]:
    params = ray_start_params(cfg, head)
    if "resources" in params:
        params["resources"] = json.dumps(params["resources"])  # KubeRay passes the JSON on quoted once more
    return params


def _container(cfg: Config, head: bool) -> dict:
    c = cfg.ray.cluster
    cpus, mem = (c.head_cpus, c.head_memory_gb) if head else (c.worker_cpus, c.worker_memory_gb)
    limits = {"cpu": str(cpus), "memory": f"{mem}Gi"}
    if not head and c.worker_gpus:
        limits["nvidia.com/gpu"] = str(c.worker_gpus)
    container = {"name": "ray-head" if head else "ray-worker", "image": c.image,
                 "resources": {"limits": limits, "requests": dict(limits)}, "volumeMounts": []}
    if head:
        container["ports"] = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                              {"containerPort": 10001, "name": "client"}]
    if c.hf_token_secret:
        container["env"] = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": c.hf_token_secret,
                                                                                 "key": "HF_TOKEN"}}}]
    if c.shared_volume_claim:
        container["volumeMounts"].append({"name": "shared", "mountPath": c.shared_mount})
    if cfg.ray.spill_dir:
        container["volumeMounts"].append({"name": "spill", "mountPath": cfg.ray.spill_dir})
    return container


def _pod(cfg: Config, head: bool) -> dict:
    c = cfg.ray.cluster
    volumes = []
    if c.shared_volume_claim:
        volumes.append({"name": "shared", "persistentVolumeClaim": {"claimName": c.shared_volume_claim}})
    if cfg.ray.spill_dir:
        volumes.append({"name": "spill", "emptyDir": {}})
    return {"spec": {"containers": [_container(cfg, head)], "volumes": volumes}}


def rayjob(cfg: Config, args: list[str], working_dir_uri: str, env: dict[str, str], python: str = "python") -> dict:
    """The RayJob manifest running `python <args>` (the arguments of `jobs.submit.job_args`)."""
    c = cfg.ray.cluster
    runtime_env = {"working_dir": working_dir_uri, "env_vars": env}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": _name(cfg.run_name), "labels": {"app.kubernetes.io/name": "zyda2"},
                     "annotations": {"zyda2/config-hash": cfg.hash()}},
        "spec": {
            "entrypoint": entrypoint(args, python),
            "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=True),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,
            "rayClusterSpec": {
                "rayVersion": RAY_VERSION,
                "headGroupSpec": {"rayStartParams": _start_params(cfg, head=True), "template": _pod(cfg, True)},
                "workerGroupSpecs": [{
                    "groupName": "workers", "replicas": c.workers, "minReplicas": c.workers,
                    "maxReplicas": c.workers, "rayStartParams": _start_params(cfg, head=False),
                    "template": _pod(cfg, False)}],
            },
        },
    }


def write_rayjob(path: str | Path, manifest: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(manifest, sort_keys=False))
