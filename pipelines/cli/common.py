"""What several commands share: their error, `--sources`, and loading a run config from the arguments."""

from __future__ import annotations

import difflib

from pipelines.core.config import ConfigError, load_config
from pipelines.core.sources import SOURCE_NAMES, SOURCES


class CommandError(RuntimeError):
    """The command line asks for something that cannot be done; the message says what to give instead
    (`zyda2.py` prints it as one error line and exits 2)."""


SOURCE_ALIASES = {alias: name for name, spec in SOURCES.items() for alias in spec.aliases}


def source_overrides(names: str | None) -> list[str]:
    """`--sources dclm,fwe` as the `--set` overrides that disable every other source."""
    if not names:
        return []
    wanted = [SOURCE_ALIASES.get(n.strip(), n.strip()) for n in names.split(",") if n.strip()]
    for n in wanted:
        if n not in SOURCE_NAMES:
            close = difflib.get_close_matches(n, SOURCE_NAMES, 1)
            raise ConfigError(f"--sources: unknown source {n!r}" + (f" (did you mean {close[0]}?)" if close else "")
                              + f"; known: {','.join(SOURCE_NAMES)}")
    if not wanted:
        raise ConfigError(f"--sources: name at least one source ({','.join(SOURCE_NAMES)})")
    return [f"sources.{n}.enabled={'true' if n in wanted else 'false'}" for n in SOURCE_NAMES]


def load_run_config(args):
    """The pipeline config of `run`, `show-config` and `submit`: CONFIG with --sources, --set, --input
    and --output applied."""
    overrides = source_overrides(getattr(args, "sources", None)) + list(args.overrides)
    return load_config(args.config, overrides, input_dir=args.input, output_dir=args.output)
