"""Input discovery: every file of every enabled source, in a deterministic order, as `SourceFile`s.

Local folders, fsspec URLs (hf://, https://) and url lists (`files_from`, Dolma's) are listed the
same way; remote listings are retried like reads (pipelines/ingest/remote.py).
"""

from __future__ import annotations

import fnmatch
import io
from pathlib import Path

import fsspec

from pipelines.core.config import Config, ConfigError, SourceConfig, is_url
from pipelines.core.sources import SOURCES, SourceFile, id_prefix, part_name
from pipelines.ingest.remote import RetryPolicy, SourceAccessError, open_input, with_retries

FORMATS = {  # file-name ending -> reader format
    ".jsonl.zst": "jsonl.zst", ".jsonl.zstd": "jsonl.zst", ".json.zst": "jsonl.zst",
    ".json.gz": "jsonl.gz", ".jsonl.gz": "jsonl.gz", ".jsonl": "jsonl", ".json": "jsonl",
    ".parquet": "parquet",
}


def _access_error(name: str, url: str, e: Exception) -> SourceAccessError:
    text = f"{type(e).__name__}: {e}"
    if isinstance(e, PermissionError) or any(k in text for k in ("401", "403", "Gated", "Unauthorized",
                                                                "RepositoryNotFound")):
        fix = "log in with `huggingface-cli login` or set HF_TOKEN (gated or private dataset)"
    else:
        fix = "check the network and the path"
    return SourceAccessError(f"sources.{name}: cannot list {url} ({text.splitlines()[0][:200]}); {fix}")


def file_format(rel: str) -> str | None:
    for ending, fmt in FORMATS.items():
        if rel.endswith(ending):
            return fmt
    return None


def _matches(rel: str, pattern: str) -> bool:
    """Glob match where `**/` may also match nothing, as in Path.glob."""
    return fnmatch.fnmatch(rel, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(rel, pattern[3:]))


def _list_files(name: str, src: SourceConfig, policy) -> list[tuple[str, str]]:
    """(url, rel) of every file of a source, sorted by rel. Remote listings are retried like reads."""
    include = src.include or list(SOURCES[name].include)
    root = src.path.rstrip("/")
    if src.files_from:
        with io.TextIOWrapper(io.BufferedReader(open_input(src.files_from, policy)), encoding="utf-8") as f:
            urls = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        found = {}
        for url in urls:
            if not url.startswith(root + "/"):
                raise ConfigError(f"sources.{name}.files_from: {url} is not under sources.{name}.path {root}")
            rel = url[len(root) + 1:]
            if any(_matches(rel, p) for p in include):
                found[rel] = url
        return sorted(((u, r) for r, u in found.items()), key=lambda x: x[1])
    if is_url(root):
        fs, base = fsspec.core.url_to_fs(root)
        protocol = root.split("://", 1)[0]
        found = {}
        for pattern in include:
            for p in with_retries(lambda: fs.glob(f"{base}/{pattern}"), policy, f"{root}/{pattern}",
                                  wrap_permanent=False):
                rel = p[len(base) + 1:]
                found[rel] = f"{protocol}://{p}"
        return sorted(((u, r) for r, u in found.items()), key=lambda x: x[1])
    base = Path(root)
    found = {}
    for pattern in include:
        for p in base.glob(pattern):
            if p.is_file():
                found[p.relative_to(base).as_posix()] = str(p)
    return sorted(((u, r) for r, u in found.items()), key=lambda x: x[1])


def discover(cfg: Config) -> list[SourceFile]:
    """Every input file of every enabled source, in a deterministic order."""
    net = cfg.network
    policy = RetryPolicy(net.retries, net.backoff_s, net.max_backoff_s, net.timeout_s)
    files: list[SourceFile] = []
    for name in sorted(cfg.sources):
        src = cfg.sources[name]
        if not src.enabled:
            continue
        try:
            listed = [(u, r) for u, r in _list_files(name, src, policy) if file_format(r)]
        except (ConfigError, SourceAccessError):
            raise
        except Exception as e:  # fsspec and hub errors come in many types; one message says what to do
            raise _access_error(name, src.files_from or src.path, e) from None
        if cfg.ingest.max_files_per_source is not None:
            listed = listed[: cfg.ingest.max_files_per_source]
        counters: dict[str, int] = {}
        names: dict[str, str] = {}
        for url, rel in listed:
            name_ = part_name(rel)
            if name_ in names:  # only a sha256 prefix collision can get here
                raise ConfigError(f"sources.{name}: inputs {names[name_]} and {rel} would share the output "
                                  f"name {name_}; rename one of them")
            names[name_] = rel
            prefix = id_prefix(name, rel)
            part = counters.get(prefix, 0)
            counters[prefix] = part + 1
            files.append(SourceFile(name, url, rel, file_format(rel), prefix, part))
    return files
