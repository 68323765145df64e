"""Where a result came from: the repository, its commit and the versions of the libraries that made it."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> str | None:
    """The repository's HEAD commit, or None outside a git checkout (e.g. an installed copy)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """Python's version and each installed distribution's (None when not installed)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
