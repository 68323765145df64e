"""Input discovery: every file of every enabled source, in a deterministic order, as `SourceFile`s.

Local folders, fsspec URLs (hf://, https://) and url lists (`files_from`, Dolma's) are listed the
same way; remote listings are retried like reads (pipelines/ingest/remote.py).

Partitions follow the text, not the file count: a parquet file over `ingest.split_mb` becomes pieces
(`split_large`), and consecutive files under `ingest.bundle_mb` become one bundle (`bundle_small`).
Every later stage then reads, writes, marks and logs one partition per bundle, so 4,000 small files
cost what the same bytes in 64 files cost (benchmarks/scale.py); ids and provenance stay per file.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.config import Config, ConfigError, SourceConfig, is_url
from pipelines.core.sources import SOURCES, Piece, SourceFile, id_prefix, part_name
from pipelines.ingest.readers import compressed_bytes
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


def _list_files(name: str, src: SourceConfig, policy) -> list[tuple[str, str, int | None]]:
    """(url, rel, bytes on disk or None when the listing does not say) of every file of a source,
    sorted by rel. Remote listings are retried like reads."""
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
                found[rel] = (url, None)
        return sorted(((u, r, n) for r, (u, n) in found.items()), key=lambda x: x[1])
    if is_url(root):
        fs, base = fsspec.core.url_to_fs(root)
        protocol = root.split("://", 1)[0]
        found = {}
        for pattern in include:
            listed = with_retries(lambda: fs.glob(f"{base}/{pattern}", detail=True), policy, f"{root}/{pattern}",
                                  wrap_permanent=False)
            for p, info in listed.items():
                rel = p[len(base) + 1:]
                found[rel] = (f"{protocol}://{p}", info.get("size"))
        return sorted(((u, r, n) for r, (u, n) in found.items()), key=lambda x: x[1])
    base = Path(root)
    found = {}
    for pattern in include:
        for p in base.glob(pattern):
            if p.is_file():
                found[p.relative_to(base).as_posix()] = (str(p), p.stat().st_size)
    return sorted(((u, r, n) for r, (u, n) in found.items()), key=lambda x: x[1])


def discover(cfg: Config) -> list[SourceFile]:
    """Every input file of every enabled source, in a deterministic order."""
    net = cfg.network
    policy = RetryPolicy(net.retries, net.backoff_s, net.max_backoff_s, net.timeout_s)
    files: list[SourceFile] = []
    sizes: list[int | None] = []  # bytes on disk, where the listing says
    for name in sorted(cfg.sources):
        src = cfg.sources[name]
        if not src.enabled:
            continue
        try:
            listed = [x for x in _list_files(name, src, policy) if file_format(x[1])]
        except (ConfigError, SourceAccessError):
            raise
        except Exception as e:  # fsspec and hub errors come in many types; one message says what to do
            raise _access_error(name, src.files_from or src.path, e) from None
        if cfg.ingest.max_files_per_source is not None:
            listed = listed[: cfg.ingest.max_files_per_source]
        counters: dict[str, int] = {}
        names: dict[str, str] = {}
        for url, rel, size in listed:
            name_ = part_name(rel)
            if name_ in names:  # only a sha256 prefix collision can get here
                raise ConfigError(f"sources.{name}: inputs {names[name_]} and {rel} would share the output "
                                  f"name {name_}; rename one of them")
            names[name_] = rel
            prefix = id_prefix(name, rel)
            part = counters.get(prefix, 0)
            counters[prefix] = part + 1
            files.append(SourceFile(name, url, rel, file_format(rel), prefix, part))
            sizes.append(size)
    sizes_by_url = {sf.url: size for sf, size in zip(files, sizes)}
    files = split_large(files, sizes, cfg.ingest.split_mb, policy)
    return bundle_small(files, [None if sf.piece else sizes_by_url[sf.url] for sf in files], cfg.ingest.bundle_mb)


def input_listing(files: list[SourceFile]) -> dict[str, dict]:
    """What a run reads, per source: {source: {"files": input files, "sha256": 16 hex digits}}, the
    digest over each file's `rel`, id prefix, partition index and row-group piece, and the partition
    that reads it, in order. Paths are relative to the source folder (the folder itself is in the
    config hash). The manifest keeps it: a resume must find the same listing (pipelines/core/run.py),
    because a file added, removed or renamed moves the partitions, `nemo_id`s and shard and Hub-file
    boundaries that the finished outputs were cut by."""
    lines: dict[str, list[str]] = {}
    rels: dict[str, set[str]] = {}  # a split file's pieces are one file
    for sf in files:
        for f in sf.files:
            piece = f"{f.piece.first_group}-{f.piece.end_group}" if f.piece else ""
            lines.setdefault(sf.source, []).append(f"{sf.part_name}\t{f.rel}\t{f.id_prefix}\t{f.partition}\t{piece}")
            rels.setdefault(sf.source, set()).add(f.rel)
    return {source: {"files": len(rels[source]), "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]}
            for source, rows in sorted(lines.items())}


def bundle_small(files: list[SourceFile], sizes: list[int | None], bundle_mb: float | None) -> list[SourceFile]:
    """`files` with runs of consecutive small files made bundles (SourceFile.members) of up to
    `bundle_mb` MB on disk (`sizes`, from the listing): files of one source, Hub subfolder, id prefix
    and format, each smaller than the target. A file of unknown size (a url list), a piece (None) or
    a file of the target's size stays alone, as does a run of one file. None or 0: no bundle.

    Why: every partition costs each stage a few files (documents, marker, log) and a few ms; 3,496
    files of 35 KB made the whole pipeline 2.9x slower than the same text in 64 files (README
    "Same text, more files"). Bundles bring a tiny-file corpus back to partitions of a useful size."""
    if not bundle_mb:
        return files
    limit = bundle_mb * 2**20
    out: list[SourceFile] = []
    run: list[SourceFile] = []
    run_key, run_bytes = None, 0

    def close():
        if len(run) > 1:
            first = run[0]
            out.append(dataclasses.replace(first, members=tuple(run)))
        else:
            out.extend(run)
        run.clear()

    for sf, size in zip(files, sizes):
        key = (sf.source, SOURCES[sf.source].hub_subfolder(sf.rel), sf.id_prefix, sf.fmt)
        if size is None or size >= limit:
            close()
            out.append(sf)
            run_key = None
            continue
        if key != run_key or run_bytes + size > limit:
            close()
            run_key, run_bytes = key, 0
        run.append(sf)
        run_bytes += size
    close()
    return out


def split_large(files: list[SourceFile], sizes: list[int | None], split_mb: float | None, policy: RetryPolicy,
                threads: int = 16) -> list[SourceFile]:
    """`files` with every parquet file over `split_mb` MB on disk (`sizes`, from the listing; a file
    of unknown size, e.g. from a url list, stays whole) replaced by its pieces: runs of whole row
    groups of about `split_mb` MB compressed (a larger row group is a piece alone), in row order.
    Only those files' footers are read, `threads` at once.

    A file whose footer cannot be read stays whole: its ingest quarantines it with the reason."""
    if split_mb is None:
        return files
    limit = split_mb * 2**20
    big = [i for i, sf in enumerate(files) if sf.fmt == "parquet" and (sizes[i] or 0) > limit]
    with ThreadPoolExecutor(threads) as pool:
        layouts = dict(zip(big, pool.map(lambda i: _row_groups(files[i].url, policy), big)))
    out = []
    for i, sf in enumerate(files):
        groups = layouts.get(i)
        if not groups or len(groups) == 1:
            out.append(sf)
            continue
        first_group = first_row = size = rows = 0
        for k, (n, nbytes) in enumerate(groups):
            size += nbytes
            rows += n
            if size >= limit or k == len(groups) - 1:
                out.append(dataclasses.replace(sf, piece=Piece(first_group, k + 1, first_row)))
                first_group, first_row, size, rows = k + 1, first_row + rows, 0, 0
    return out


def _row_groups(url: str, policy: RetryPolicy) -> list[tuple[int, int]] | None:
    """(rows, compressed bytes) of each row group of a parquet file, or None when its footer is unreadable."""
    try:
        with open_input(url, policy) as raw:
            meta = pq.ParquetFile(raw).metadata
            groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
            return [(rg.num_rows, compressed_bytes(rg)) for rg in groups]
    except (OSError, SourceAccessError, ValueError, pa.ArrowException):
        return None
