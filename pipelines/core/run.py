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
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import ray

from pipelines.core.config import Config, ConfigError, config_from_dict, is_url
from pipelines.core.executor import Executor
from pipelines.core.outputs import read_json, remove_stale_temp, write_json
from pipelines.core.progress import ProgressCounter, say
from pipelines.core.provenance import REPO_ROOT, git_commit, versions
from pipelines.core.report import build_report, check_report
from pipelines.core.stage import Pipeline, RunError
from pipelines.ingest.discover import discover, input_listing

log = logging.getLogger("zyda2")

# what makes a run's outputs (recorded in manifest.json); datatrove and datasketch are benchmark and test
# peers only (the `bench` extra)
PACKAGES = ("ray", "pyarrow", "numpy", "numba", "orjson", "zstandard", "fsspec", "huggingface-hub", "torch",
            "sentencepiece", "fasttext-numpy2-wheel", "transformers")


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
    # The notice that a local instance has token authentication on (Ray's default, nothing to do) is not
    # a warning for our users; every other Ray warning stays.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    on_term = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise RunError(f"cannot reach the Ray cluster at {cfg.ray.address!r} ({e}); start it with "
                       "`ray start --head` or fix ray.address in the config") from None
    except BaseException:  # interrupted while the instance starts: stop what was started
        ray.shutdown(wait_for_processes=True)
        raise
    finally:
        if threading.current_thread() is threading.main_thread() and on_term is not None \
                and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, on_term)  # ray.init replaces it with a bare sys.exit
    try:
        yield
    finally:
        ray.shutdown(wait_for_processes=True)  # an interrupted run leaves no Ray process behind


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (as in manifest.json), sorted."""
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def _describe_diff(old: dict, new: dict) -> str:
    keys = config_diff(old, new)
    shown = [f"{k} ({_dig(old, k)!r} -> {_dig(new, k)!r})" for k in keys[:5]]
    return ", ".join(shown) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "") if keys else "no key"


def _dig(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _prepare_output(cfg: Config, resume: bool, overwrite: bool, dry_run: bool = False) -> tuple[Path, dict | None]:
    """Check the run folder against --resume/--overwrite; returns it and the manifest of the run
    it holds (resume) or None (fresh run). `dry_run` (run --plan): the same checks and RunErrors,
    nothing deleted or created."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other (finish the run in the folder, or delete "
                       "it and start again): give one of them")
    if is_url(cfg.output_dir):
        raise RunError(f"output_dir must be a local or mounted folder, got {cfg.output_dir}")
    out = Path(cfg.output_dir)
    manifest = out / "manifest.json"
    old = None
    if manifest.exists():
        old = read_json(manifest)
        if overwrite:
            if not dry_run:
                shutil.rmtree(out)
            old = None
        elif not resume:
            raise RunError(f"{out} already holds a run (status {old.get('status')!r}); pass --resume to "
                           "finish it, --overwrite to replace it, or choose another --output")
        elif old.get("config_hash") != cfg.hash():
            raise RunError(f"{out} was started with another config (hash {old.get('config_hash')} != "
                           f"{cfg.hash()}; differing keys: {_describe_diff(old.get('config', {}), cfg.to_dict())}); "
                           "resume with the same config or choose another --output")
        elif not dry_run:
            remove_stale_temp(out)  # half-written files of the interrupted run
    elif out.exists() and not out.is_dir():
        raise RunError(f"--output {out} is a file, not a folder")
    elif out.exists() and any(out.iterdir()):
        raise RunError(f"{out} has files but no manifest.json: not a zyda2 run folder, so it is neither resumed "
                       "nor overwritten; choose a new or empty --output")
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
    return out, old


def check_output(cfg: Config, resume: bool, overwrite: bool) -> None:
    """Raise the RunError the run itself would raise for its --output folder, touching nothing."""
    _prepare_output(cfg, resume, overwrite, dry_run=True)


def check_inputs(cfg: Config, files: list, allow_empty: bool) -> None:
    """A run must read something, and every enabled source must have files (unless `allow_empty`)."""
    enabled = {name: src for name, src in sorted(cfg.sources.items()) if src.enabled}
    if not enabled:
        raise RunError("every source is disabled; enable one (e.g. --sources dclm)")
    empty = [name for name in enabled if not any(f.source == name for f in files)]
    where = "; ".join(f"{name}: {enabled[name].files_from or enabled[name].path}" for name in empty)
    if len(empty) == len(enabled):
        raise RunError(f"no input files: no enabled source has a file matching its include patterns ({where}); "
                       "point --input at a folder laid out like ../shared/data/sources (see `run --plan`)")
    if empty and not allow_empty:
        keep = ",".join(n for n in enabled if n not in empty)
        raise RunError(f"source {', '.join(empty)} has no input file ({where}); leave it out with --sources {keep}, "
                       "or pass --allow-empty to run without it")
    for name in empty:
        log.warning("source %s: no input files matched under %s", name, enabled[name].path)


def rerun_dedup(pipeline: Pipeline, run_dir: Path, overrides: list[str], output: Path, quiet: bool = False,
                overwrite: bool = False, resume: bool = False, command: list[str] | None = None) -> dict:
    """Dedup again with other parameters on an existing run's ingest output, into `output`: the
    stages of `pipeline` up to dedup.

    `output` links the run's ingest folder and signature cache, so only clustering is recomputed
    when the shingling and hash parameters are unchanged."""
    manifest_path = Path(run_dir) / "manifest.json"
    if not manifest_path.exists():
        raise RunError(f"{run_dir} is not a zyda2 run folder (no manifest.json)")
    cfg = config_from_dict(read_json(manifest_path)["config"], overrides, output_dir=str(output))
    links = {rel: (Path(run_dir) / rel).resolve() for rel in ("ingest", "dedup/signatures")}
    return run_pipeline(pipeline, cfg, resume=resume, overwrite=overwrite, quiet=quiet, until="dedup",
                        links=links, command=command)


def check_same_inputs(out: Path, old: dict | None, inputs: dict[str, dict]) -> None:
    """A resumed run must read the files it started with (`input_listing`): RunError naming each
    source whose files changed. A run folder from before the manifest kept `inputs` is not checked."""
    before = (old or {}).get("inputs")
    if before is None or before == inputs:
        return
    changed = [f"{s}: {before.get(s, {}).get('files', 0)} files then, {inputs.get(s, {}).get('files', 0)} now"
               for s in sorted(set(before) | set(inputs)) if before.get(s) != inputs.get(s)]
    raise RunError(f"{out} was started on other input files ({'; '.join(changed)}); its finished outputs are cut "
                   "by those files' partitions and ids, so restore them, or start again with --overwrite or "
                   "another --output")


def _is_complete(out: Path, old: dict | None, stage_hashes: dict[str, str]) -> bool:
    """The folder holds a finished, balanced run of every stage asked for, each with the same chained
    config hash (a stage's own parameters, e.g. one defined outside the config, count): nothing to resume."""
    return bool(old and old.get("status") == "done" and (out / "report.json").exists()
                and all(old.get("stages", {}).get(s, {}).get("status") == "done"
                        and old.get("stage_hashes", {}).get(s) == h for s, h in stage_hashes.items()))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def check_stage_names(pipeline: Pipeline, cfg: Config) -> None:
    """Config keys that name stages must name the pipeline's stages (ConfigError, one line)."""
    for name in cfg.ray.stage_resources:
        if name not in pipeline.names:
            raise ConfigError(f"ray.stage_resources.{name}: unknown stage (known: {', '.join(pipeline.names)})")


def run_pipeline(pipeline: Pipeline, cfg: Config, resume: bool = False, overwrite: bool = False, quiet: bool = False,
                 only: list[str] | None = None, links: dict[str, Path] | None = None,
                 command: list[str] | None = None, allow_empty: bool = False, until: str | None = None) -> dict:
    """Run every stage of `pipeline`, or those in `only`, or those up to and including `until`, into
    `cfg.output_dir`; write `report.json` and `manifest.json`; raise if accounting fails. `links` maps
    folders of the run to existing ones (reused work). The Zyda-2 pipeline is `pipelines.pipeline.PIPELINE`.

    manifest.json keeps, across resumes: `command` (argv of each attempt under `attempts`, with
    its status and seconds), `stages` {name: {status, seconds}} where seconds add up over every
    attempt, `stage_hashes` {name: chained config hash}, `inputs` (`input_listing`) and
    `total_seconds`. Raises RunError when there is nothing to read (`check_inputs`) or a source
    ingests no document, unless `allow_empty`, when a resume finds other input files
    (`check_same_inputs`), and ConfigError when `ray.stage_resources` names a stage the pipeline does not have."""
    check_stage_names(pipeline, cfg)
    if until is not None:
        only = list(pipeline.names[: pipeline.names.index(until) + 1])
    out, old = _prepare_output(cfg, resume, overwrite)
    files = discover(cfg)
    check_inputs(cfg, files, allow_empty)
    inputs = input_listing(files)
    if resume:
        check_same_inputs(out, old, inputs)
    planned = [s.name for s in pipeline.planned(cfg, only)]
    stage_hashes = {name: pipeline.config_hash(cfg, name) for name in planned}
    if resume and _is_complete(out, old, stage_hashes):
        # said even with --quiet: it is the answer to the command, not progress
        say(False, "resume", f"{out} is complete: all {len(planned)} stages finished "
                             f"({old.get('finished_at')}); nothing to do")
        return read_json(out / "report.json")
    for rel, target in (links or {}).items():
        target.mkdir(parents=True, exist_ok=True)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (out / rel).exists():
            (out / rel).symlink_to(target, target_is_directory=True)
    prior = (old or {}).get("stages", {})
    prior_seconds = {name: float(prior.get(name, {}).get("seconds", 0.0)) if isinstance(prior.get(name), dict)
                     else 0.0 for name in planned}
    attempts = list((old or {}).get("attempts", []))
    command = list(sys.argv) if command is None else command  # a run started from Python: its script's argv
    attempt = {"command": command, "started_at": _now(), "status": "running", "seconds": 0.0}
    attempts.append(attempt)
    manifest = {"run_name": cfg.run_name, "config": cfg.to_dict(), "config_hash": cfg.hash(), "stages_run": only,
                "versions": versions(PACKAGES), "git_commit": git_commit(), "status": "running",
                "command": command, "started_at": (old or {}).get("started_at", attempt["started_at"]),
                "attempts": attempts, "total_seconds": 0.0, "stage_hashes": stage_hashes, "inputs": inputs,
                "stages": {name: {"status": "done" if prior.get(name, {}).get("status") == "done" and
                                  isinstance(prior.get(name), dict) else "pending",
                                  "seconds": round(prior_seconds[name], 3)} for name in planned}}
    t_attempt = time.monotonic()
    stage_t0: dict[str, float] = {}
    previous_total = sum(float(a.get("seconds", 0.0)) for a in attempts[:-1])

    def write_manifest(status: str | None = None) -> None:
        attempt["seconds"] = round(time.monotonic() - t_attempt, 3)
        if status:
            attempt["status"] = manifest["status"] = status
        manifest["total_seconds"] = round(previous_total + attempt["seconds"], 3)
        write_json(out / "manifest.json", manifest)

    def on_stage(name: str, status: str) -> None:
        if status == "running":
            stage_t0[name] = time.monotonic()
        else:
            manifest["stages"][name]["seconds"] = round(prior_seconds[name] + ex.timings[name], 3)
            attempt["tasks"] = dict(ex.tasks)  # Ray tasks (or actor calls) per step in this attempt
            attempt["objects"] = dict(ex.objects)  # Ray objects per step, where counted (dedup's shuffles)
        manifest["stages"][name]["status"] = status
        write_manifest()

    write_manifest()
    with _run_log(out) as note:
        note(f"attempt {len(attempts)}: {' '.join(command or [])}")
        with ray_session(cfg):
            ex = Executor(pipeline, cfg, out, files, ProgressCounter.remote(), quiet=quiet, allow_empty=allow_empty)
            try:
                results = ex.run(only, on_stage)
            except BaseException as e:
                status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                for name, st in manifest["stages"].items():
                    if st["status"] == "running":
                        st["status"] = status
                        st["seconds"] = round(prior_seconds[name] + time.monotonic() - stage_t0[name], 3)
                if status == "failed":
                    cause = getattr(e, "cause", None) or e  # a task's own exception, not Ray's wrapper
                    attempt["error"] = f"{type(cause).__name__}: {cause}".splitlines()[0][:500]
                note(f"attempt {len(attempts)} {status}: {attempt.get('error', 'signal')}")
                write_manifest(status)
                raise
            finally:
                with contextlib.suppress(Exception):
                    ray.kill(ex.progress)
        report = build_report(results, ex.details)
        write_json(out / "report.json", report)
        manifest["finished_at"] = _now()
        write_manifest("done" if report["totals"]["balanced"] else "accounting_failed")
        note(f"attempt {len(attempts)} {manifest['status']} in {attempt['seconds']:.1f}s")
    check_report(report)
    return report


@contextlib.contextmanager
def _run_log(out: Path):
    """RUN/logs/run.log, kept across attempts: each attempt's command and outcome, and the driver's
    warnings (zyda2 logger). Yields `note(line)`, which appends a line there only."""
    path = out / "logs" / "run.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)

    def note(line: str) -> None:
        handler.stream.write(f"{_now()} {line}\n")
        handler.flush()
    try:
        yield note
    finally:
        log.removeHandler(handler)
        handler.close()
