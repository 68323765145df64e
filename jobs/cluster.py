"""`ray start` flags of a cluster's head and worker nodes, from the config (`ray.*`, `ray.cluster.*`).

One definition for every way `jobs/` starts a cluster, so the object store size, its spilling folder
and the workers' custom resources (what `ray.stage_resources` can ask for) agree between the KubeRay
manifest and the Slurm script:

    python -m jobs.cluster head configs/zyda2.yaml      # one flag per line
    python -m jobs.cluster worker configs/zyda2.yaml --set ray.spill_dir=/local/ray-spill

The arguments after the role are those of `zyda2.py run` (only the config and `--set` matter here),
so the Slurm script hands over its own arguments unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.core.config import Config, ConfigError, load_config


def ray_start_params(cfg: Config, head: bool, head_tasks: bool = False) -> dict[str, str]:
    """Flag name -> value. Unless `head_tasks`, the head asks for no CPUs: it runs the driver and
    stage tasks go to workers (a small head pod on Kubernetes; Slurm's exclusive head node does work)."""
    params = {"dashboard-host": "0.0.0.0"} if head else {}
    if head and not head_tasks:
        params["num-cpus"] = "0"
    if cfg.ray.object_store_mb:
        params["object-store-memory"] = str(cfg.ray.object_store_mb << 20)
    if cfg.ray.spill_dir:
        params["object-spilling-directory"] = cfg.ray.spill_dir
    if not head and cfg.ray.cluster.worker_resources:
        params["resources"] = json.dumps(cfg.ray.cluster.worker_resources, sort_keys=True)
    return params


def start_flags(params: dict[str, str]) -> list[str]:
    return [f"--{name}={value}" for name, value in params.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("role", choices=["head", "worker"])
    p.add_argument("config")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides")
    p.add_argument("--head-tasks", action="store_true", help="the head runs stage tasks too (sets no num-cpus)")
    args, _ = p.parse_known_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"zyda2: error: {e}", file=sys.stderr)
        return 2
    for flag in start_flags(ray_start_params(cfg, args.role == "head", args.head_tasks)):
        print(flag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
