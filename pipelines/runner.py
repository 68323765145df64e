"""Runs the stage graph on Ray for one output folder: manifest, resume rules, report.

Why Ray tasks (one per partition) rather than Ray Data: every stage's unit of work is a file
whose outputs must keep a deterministic name and content, and whose completion must be
recorded for `--resume`; with tasks both are direct, and Ray still does scheduling, retries
after worker loss and spreading over a cluster. `benchmarks/ingest.py` measures both on the
fixtures (README has the figures).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import ray

from pipelines.config import Config, config_from_dict, is_url
from pipelines.outputs import read_json, remove_stale_temp, write_json
from pipelines.progress import ProgressCounter
from pipelines.report import build_report, check_report
from pipelines.sources import discover
from pipelines.graph import run_stages
from pipelines.stages import StageContext

log = logging.getLogger("zyda2")

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ray", "pyarrow", "datatrove", "datasketch", "numpy", "orjson", "zstandard", "fsspec",
            "huggingface-hub", "torch")


class RunError(RuntimeError):
    """The run cannot start or go on as asked; the message says what to do."""


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds with a clear message: Ray itself aborts the process after ~40 s on a dead address."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RunError(f"ray.address {address!r} is not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise RunError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it with "
                       "`ray start --head` or fix ray.address") from None


@contextlib.contextmanager
def ray_session(cfg: Config):
    """Join the Ray instance already running in this process, or start/connect one for the run."""
    if cfg.ray.address:
        check_reachable(cfg.ray.address)
    if ray.is_initialized():
        yield
        return
    kwargs = dict(include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
    if cfg.ray.address:
        kwargs["address"] = cfg.ray.address
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:  # set in a Ray job, which brings its working_dir
            kwargs["runtime_env"] = {"working_dir": str(REPO_ROOT),
                                     "excludes": [".venv/", ".git/", "runs/", "benchmarks/results/"]}
    else:
        kwargs["num_cpus"] = cfg.ray.num_cpus
        if cfg.ray.object_store_mb:
            kwargs["object_store_memory"] = cfg.ray.object_store_mb << 20
        if cfg.ray.spill_dir:
            kwargs["object_spilling_directory"] = cfg.ray.spill_dir
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise RunError(f"cannot reach the Ray cluster at {cfg.ray.address!r} ({e}); start it with "
                       "`ray start --head` or fix ray.address in the config") from None
    try:
        yield
    finally:
        ray.shutdown()


def _versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _prepare_output(cfg: Config, resume: bool, overwrite: bool) -> Path:
    if is_url(cfg.output_dir):
        raise RunError(f"output_dir must be a local or mounted folder, got {cfg.output_dir}")
    out = Path(cfg.output_dir)
    manifest = out / "manifest.json"
    if manifest.exists():
        old = read_json(manifest)
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise RunError(f"{out} already holds a run (status {old.get('status')!r}); pass --resume to "
                           "finish it, --overwrite to replace it, or choose another --output")
        elif old.get("config_hash") != cfg.hash():
            raise RunError(f"{out} was started with another config (hash {old.get('config_hash')} != "
                           f"{cfg.hash()}); resume with the same config or choose another --output")
        else:
            remove_stale_temp(out)  # half-written files of the interrupted run
    elif resume and out.exists() and any(out.iterdir()):
        raise RunError(f"{out} has files but no manifest.json: not a zyda2 run folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def rerun_dedup(run_dir: Path, overrides: list[str], output: Path, quiet: bool = False,
                overwrite: bool = False) -> dict:
    """Dedup again with other parameters on an existing run's ingest output, into `output`.

    `output` links the run's ingest folder and signature cache, so only clustering is recomputed
    when the shingling and hash parameters are unchanged."""
    manifest_path = Path(run_dir) / "manifest.json"
    if not manifest_path.exists():
        raise RunError(f"{run_dir} is not a zyda2 run folder (no manifest.json)")
    cfg = config_from_dict(read_json(manifest_path)["config"], overrides, output_dir=str(output))
    links = {rel: (Path(run_dir) / rel).resolve() for rel in ("ingest", "dedup/signatures")}
    return run_pipeline(cfg, overwrite=overwrite, quiet=quiet, only=["ingest", "heuristic_filter", "dedup"],
                        links=links)


def run_pipeline(cfg: Config, resume: bool = False, overwrite: bool = False, quiet: bool = False,
                 only: list[str] | None = None, links: dict[str, Path] | None = None) -> dict:
    """Run every stage (or those in `only`), write `report.json` and `manifest.json`;
    raise if accounting fails. `links` maps folders of the run to existing ones (reused work)."""
    out = _prepare_output(cfg, resume, overwrite)
    for rel, target in (links or {}).items():
        target.mkdir(parents=True, exist_ok=True)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (out / rel).exists():
            (out / rel).symlink_to(target, target_is_directory=True)
    manifest = {"run_name": cfg.run_name, "config": cfg.to_dict(), "config_hash": cfg.hash(), "stages_run": only,
                "versions": _versions(), "git_commit": _git_commit(), "status": "running",
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {}}
    write_json(out / "manifest.json", manifest)
    files = discover(cfg)
    for name, src in sorted(cfg.sources.items()):
        if src.enabled and not any(f.source == name for f in files):
            log.warning("source %s: no input files matched under %s", name, src.path)
    with ray_session(cfg):
        ctx = StageContext(cfg=cfg, out=out, files=files, progress=ProgressCounter.remote(), quiet=quiet)
        try:
            results = run_stages(ctx, only)
        except BaseException:
            manifest["status"] = "failed"
            manifest["stages"] = ctx.timings
            write_json(out / "manifest.json", manifest)
            raise
        finally:
            ray.kill(ctx.progress)
    report = build_report(results, ctx.details)
    write_json(out / "report.json", report)
    manifest["stages"] = {name: {"status": "done", "seconds": ctx.timings[name]} for name in results}
    manifest["status"] = "done" if report["totals"]["balanced"] else "accounting_failed"
    manifest["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(out / "manifest.json", manifest)
    check_report(report)
    return report
