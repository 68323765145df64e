"""The four Zyda-2 sources: where their files are, what format they have, how their ids are formed.

`nemo_id` follows NeMo Curator's `AddId` convention used for Zyda-2, `<prefix>-<row><partition>`,
with two fixes that make it safe at 5 B documents: the row is always 10 digits and the partition
always 5 (Curator pads to the width of each file's row count, so `1`+`23` and `12`+`3` collide).
`partition` is the file's index among the files sharing the prefix, in sorted path order, so the
same input folder always yields the same ids. Prefixes (RECIPE.md):

  dclm      dclm-gs<global shard>   from `global-shard_01_of_10/...`     -> dclm-gs01-...
  fwe       fwe2-<dump>             from `data/CC-MAIN-2024-10/...`      -> fwe2-CC-MAIN-2024-10-...
  zyda      <folder>                from `zyda_c4-en/...`                 -> zyda_c4-en-...
  dolma-cc  dolma-cc                                                     -> dolma-cc-...
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import fsspec

from pipelines.core.config import Config, ConfigError, SourceConfig, is_url

# Folder of each source inside an `--input` directory (the layout of ../shared/data/sources).
INPUT_FOLDERS = {"dclm": "dclm", "fwe": "fineweb-edu", "zyda": "zyda", "dolma-cc": "dolma-cc"}

FORMATS = {  # file-name ending -> reader format
    ".jsonl.zst": "jsonl.zst", ".jsonl.zstd": "jsonl.zst", ".json.zst": "jsonl.zst",
    ".json.gz": "jsonl.gz", ".jsonl.gz": "jsonl.gz", ".jsonl": "jsonl", ".json": "jsonl",
    ".parquet": "parquet",
}

DEFAULT_INCLUDE = {
    "dclm": ["**/*.jsonl.zst", "**/*.parquet"],
    "fwe": ["**/*.parquet"],
    "zyda": ["**/*.parquet"],
    "dolma-cc": ["**/*.json.gz"],
}


@dataclass(frozen=True)
class SourceFile:
    """One input file: the unit of ingest work (a partition)."""
    source: str
    url: str          # absolute local path or fsspec URL
    rel: str          # path relative to the source folder (provenance: `src_file`)
    fmt: str
    id_prefix: str
    partition: int    # index among the files with the same id_prefix

    @property
    def part_name(self) -> str:
        """File-system-safe name of this partition's outputs: `part_name(rel)`."""
        return part_name(self.rel)


MAX_PART_NAME_BYTES = 160  # leaves room for "<source>__", ".parquet", temp-file affixes within NAME_MAX (255)


def part_name(rel: str) -> str:
    """The name of one input file's outputs, injective over inputs and readable back to `rel`.

    `rel` (the whole path, format ending included: `x.jsonl.zst` and `x.parquet` differ) is
    percent-encoded (RFC 3986) in its `%` and `/` and a leading `.` (no hidden or temp-looking
    names), so `a/b.parquet` -> `a%2Fb.parquet` never meets `a__b.parquet`. A name longer than
    MAX_PART_NAME_BYTES keeps its first characters and ends in `%~` + 16 hex digits of
    sha256(rel): `%~` cannot occur in an encoded name, so it cannot collide with an unshortened one."""
    name = rel.replace("%", "%25").replace("/", "%2F")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name.encode()) > MAX_PART_NAME_BYTES:
        digest = hashlib.sha256(rel.encode()).hexdigest()[:16]
        head = name.encode()[: MAX_PART_NAME_BYTES - 18].decode("utf-8", "ignore")
        name = f"{head}%~{digest}"
    return name


class SourceAccessError(RuntimeError):
    """A source's files cannot be listed or opened (credentials, network)."""


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


def id_prefix(source: str, rel: str) -> str:
    parts = PurePosixPath(rel).parts
    if source == "dclm":
        m = re.search(r"global-shard_(\d+)_of_\d+", rel)
        return f"dclm-gs{m.group(1)}" if m else "dclm-gs00"
    if source == "fwe":
        dump = next((p for p in parts if p.startswith("CC-MAIN-")), None)
        return f"fwe2-{dump}" if dump else "fwe2-unknown"
    if source == "zyda":
        folder = next((p for p in parts if p.startswith("zyda_")), None)
        return folder or "zyda"
    return "dolma-cc"


def make_id(prefix: str, row: int, partition: int) -> str:
    return f"{prefix}-{row:010d}{partition:05d}"


def _matches(rel: str, pattern: str) -> bool:
    """Glob match where `**/` may also match nothing, as in Path.glob."""
    return fnmatch.fnmatch(rel, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(rel, pattern[3:]))


def _list_files(name: str, src: SourceConfig, policy) -> list[tuple[str, str]]:
    """(url, rel) of every file of a source, sorted by rel. Remote listings are retried like reads."""
    from pipelines.ingest.remote import open_input, with_retries
    include = src.include or DEFAULT_INCLUDE[name]
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
    from pipelines.ingest.remote import RetryPolicy
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
