"""Submit the pipeline to a running Ray cluster as a Ray job (`zyda2.py submit`).

Why a job rather than `zyda2.py run --set ray.address=...` from a workstation: the driver then runs
on the cluster's head node, so a closed laptop or a dropped VPN does not end a day-long run, and the
dashboard keeps its logs and status. The repository is the job's working_dir (uploaded, so the
cluster runs exactly this code). The config is loaded and validated here first, so a typo fails in a
second rather than after the upload, and every local path it resolves to is handed to the job as an
absolute path: the cluster must see the same paths (shared storage) or read URLs (hf://, https://).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from pathlib import Path

from pipelines.core.config import Config, is_url

REPO = Path(__file__).resolve().parent.parent
# never uploaded: environments, run folders, caches (the upload limit is a few hundred MB)
EXCLUDES = [".venv/", ".git/", "runs/", "benchmarks/results/", "__pycache__/", ".pytest_cache/", ".hypothesis/",
            "*.egg-info/"]
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|CREDENTIAL|(^|_)KEY$", re.IGNORECASE)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(RuntimeError):
    """The job cannot be submitted as asked; the message says what to do (`zyda2.py submit` exits 2)."""


def job_args(cfg: Config, config_path: str | Path, overrides: list[str], flags: list[str] = ()) -> list[str]:
    """`zyda2.py run` arguments that rebuild `cfg` on the cluster: the config's path inside the
    repository, the user's overrides, then the local paths resolved here (absolute) and `ray.address=auto`;
    `flags` (--resume, --overwrite) go on unchanged."""
    try:
        rel = Path(config_path).resolve().relative_to(REPO)
    except ValueError:
        raise SubmitError(f"{config_path}: a submitted config must lie inside {REPO} (the job's working_dir); "
                       "copy it into configs/") from None
    args = ["zyda2.py", "run", rel.as_posix(), "--output", cfg.output_dir]
    if cfg.input_dir:
        args += ["--input", cfg.input_dir]
    pinned = [*overrides, "ray.address=auto"]
    if not cfg.input_dir:  # with --input the job re-roots every source under it (absolute paths are refused)
        pinned += [f"sources.{name}.path={src.path}" for name, src in sorted(cfg.sources.items())
                   if src.enabled and not is_url(src.path)]
    if Path(cfg.quality_filter.model).is_absolute():
        pinned.append(f"quality_filter.model={cfg.quality_filter.model}")
    for item in pinned:
        args += ["--set", item]
    return args + list(flags)


def entrypoint(args: list[str], python: str = "python") -> str:
    return shlex.join([python, *args])


def env_vars(pairs: list[str]) -> dict[str, str]:
    """`--env KEY=VALUE` pairs for the job. Runtime-env variables are shown in plain text by the
    dashboard and `ray job list`, so anything named like a credential is refused."""
    env = {"PYTHONUNBUFFERED": "1"}  # log lines reach `ray job logs` as they are printed
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SubmitError(f"--env {pair!r}: expected NAME=VALUE")
        if SECRET_NAME.search(name):
            raise SubmitError(f"--env {name}: credentials are not passed through the job's runtime_env (the dashboard "
                           "shows it in plain text); give the cluster nodes their own (e.g. HF_TOKEN in the node "
                           "environment, or a Kubernetes Secret: ray.cluster.hf_token_secret)")
        env[name] = value
    return env


def runtime_env(env: dict[str, str]) -> dict:
    return {"working_dir": str(REPO), "excludes": EXCLUDES, "env_vars": env}


def _client(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient
    try:
        return JobSubmissionClient(address)
    except AuthenticationError:
        raise SubmitError(f"the Ray cluster at {address} wants its auth token: export RAY_AUTH_MODE=token and "
                       "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH; default ~/.ray/auth_token)") from None
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise SubmitError(f"cannot reach the Ray job server at {address} ({str(e).splitlines()[0]}); give the "
                       "head's dashboard address, e.g. http://HEAD:8265 (`ray start --head` opens it)") from None


def submit(cfg: Config, args: list[str], address: str, env: dict[str, str], python: str = "python",
           wait: bool = True, out=sys.stdout) -> int:
    """Submit, then (with `wait`) stream the job's logs until it ends; the exit code says how it ended."""
    client = _client(address)
    if os.environ.get("HF_TOKEN"):
        print("note: HF_TOKEN is not sent with the job (the dashboard shows runtime_env in plain text); the "
              "nodes use their own Hugging Face credentials", file=sys.stderr)
    try:
        job_id = client.submit_job(
            entrypoint=entrypoint(args, python), runtime_env=runtime_env(env),
            submission_id=f"{cfg.run_name}-{time.strftime('%Y%m%d-%H%M%S')}",
            metadata={"run_name": cfg.run_name, "config_hash": cfg.hash(), "output_dir": cfg.output_dir})
    except RuntimeError as e:  # the job server refused it (upload too large, duplicate id, ...)
        raise SubmitError(f"the Ray job server at {address} refused the job: {str(e).splitlines()[0]}") from None
    print(f"submitted {job_id} to {address}", file=out, flush=True)
    follow = f"ray job logs --address {address} --follow {job_id}"
    if not wait:
        print(f"follow:  {follow}\nstatus:  ray job status --address {address} {job_id}\n"
              f"stop:    ray job stop --address {address} {job_id}", file=out, flush=True)
        return 0
    try:
        asyncio.run(_tail(client, job_id, out))
        status = _final_status(client, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on ({follow}; stop it with "
              f"`ray job stop --address {address} {job_id}`)", file=out, flush=True)
        return 130
    message = (client.get_job_info(job_id).message or "").strip().splitlines()  # its logs were streamed above
    print(f"job {job_id}: {status}" + (f" ({message[0]})" if status != "SUCCEEDED" and message else ""),
          file=out, flush=True)
    return 0 if status == "SUCCEEDED" else 1


async def _tail(client, job_id: str, out) -> None:
    async for lines in client.tail_job_logs(job_id):
        out.write(lines)
        out.flush()


def _final_status(client, job_id: str, timeout: float = 60.0) -> str:
    """The log stream can close a moment before the status turns terminal."""
    deadline = time.monotonic() + timeout
    while True:
        status = str(client.get_job_status(job_id).value)
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(0.5)
