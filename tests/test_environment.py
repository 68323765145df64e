"""pip resolved exactly the pinned versions (it silently falls back to old releases on conflicts)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from tests.conftest import REPO

PIN = re.compile(r"([A-Za-z0-9_.-]+)(\[[^\]]+\])?==([\w.]+)")
SELF = re.compile(r"zyda2\[([^\]]+)\]")  # an extra that includes other extras of this project


def installed_pins(project: dict, extra: str = "dev") -> list[str]:
    """The pins that `pip install -e ".[extra]"` installs (what the Makefile installs): the runtime
    dependencies, then the extra's, with each `zyda2[other]` it names expanded."""
    extras = project["optional-dependencies"]
    pins, todo, seen = list(project["dependencies"]), [extra], set()
    while todo:
        name = todo.pop()
        assert name in extras, f"no extra {name!r} in pyproject.toml"
        if name in seen:
            continue
        seen.add(name)
        for spec in extras[name]:
            if m := SELF.fullmatch(spec):
                todo.extend(e.strip() for e in m.group(1).split(","))
            else:
                pins.append(spec)
    return pins


def test_dev_installs_every_extra():
    """`make test` and `make bench` install `.[dev]`: it must bring every other extra along."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    every = [p for extra in project["optional-dependencies"].values() for p in extra if not SELF.fullmatch(p)]
    assert sorted(set(every) - set(installed_pins(project))) == []


def test_installed_versions_match_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wrong = []
    for pin in installed_pins(project):
        m = PIN.fullmatch(pin)
        assert m, f"dependency not pinned exactly: {pin}"
        name, version = m.group(1), m.group(3)
        installed = metadata.version(name)
        if installed.split("+")[0] != version:
            wrong.append(f"{name}: pinned {version}, installed {installed}")
    assert wrong == []
