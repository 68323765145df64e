"""pip resolved exactly the pinned versions (it silently falls back to old releases on conflicts)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from tests.conftest import REPO


def test_installed_versions_match_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + project["optional-dependencies"]["dev"]
    wrong = []
    for pin in pins:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?==([\w.]+)", pin)
        assert m, f"dependency not pinned exactly: {pin}"
        name, version = m.group(1), m.group(3)
        installed = metadata.version(name)
        if installed.split("+")[0] != version:
            wrong.append(f"{name}: pinned {version}, installed {installed}")
    assert wrong == []
