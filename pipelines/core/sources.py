"""The four Zyda-2 sources (the one registry of per-source facts), input files and their ids.

`SOURCES` holds everything the pipeline knows about a source: its folder in an `--input` tree, its
default include globs, the released component it becomes, the native columns lifted into typed
DOC_SCHEMA columns, the nested field that holds a URL, how its `nemo_id` prefix is formed and which
path part names its Hub subfolder. Nothing else in the code names a source's particulars.

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

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath


@dataclass(frozen=True)
class SourceSpec:
    name: str                      # the config key (sources.<name>)
    folder: str                    # its folder inside an `--input` tree (the layout of ../shared/data/sources)
    include: tuple[str, ...]       # default include globs, relative to the source's path
    component: str                 # the released dataset's component (shards/, publish/, blends)
    lifted: dict[str, str] = field(default_factory=dict)  # native column -> typed DOC_SCHEMA column
    url_field: str | None = None   # nested native field holding `url` (Dolma `metadata`, Zyda `source_other`)
    subfolder_prefix: str | None = None  # path part that names the Hub subfolder (and the id prefix)
    aliases: tuple[str, ...] = ()  # other names `--sources` accepts (e.g. the dataset's own name)

    def subfolder(self, rel: str) -> str | None:
        """The path part of `rel` that starts with `subfolder_prefix` (a shard, dump or sub-corpus)."""
        if self.subfolder_prefix is None:
            return None
        return next((p for p in PurePosixPath(rel).parts if p.startswith(self.subfolder_prefix)), None)

    def hub_subfolder(self, rel: str) -> str:
        """The Hub subfolder `rel`'s documents are published under: `subfolder(rel)`, else the first
        folder of `rel`, else `default`. Bundles never mix two (pipelines/ingest/discover.py)."""
        parts = PurePosixPath(rel).parts
        return self.subfolder(rel) or (parts[0] if len(parts) > 1 else "default")


SOURCES: dict[str, SourceSpec] = {s.name: s for s in (
    SourceSpec("dclm", "dclm", ("**/*.jsonl.zst", "**/*.parquet"), "dclm_crossdeduped",
               {"url": "url", "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob": "dclm_fasttext_prob"},
               subfolder_prefix="global-shard"),
    SourceSpec("fwe", "fineweb-edu", ("**/*.parquet",), "fwe3",
               {"id": "native_id", "url": "url", "int_score": "int_score", "score": "edu_score"},
               subfolder_prefix="CC-MAIN-", aliases=("fineweb-edu",)),
    SourceSpec("zyda", "zyda", ("**/*.parquet",), "zyda_crossdeduped-filtered", url_field="source_other",
               subfolder_prefix="zyda_"),
    SourceSpec("dolma-cc", "dolma-cc", ("**/*.json.gz",), "dolma-cc_crossdeduped-filtered", {"id": "native_id"},
               url_field="metadata", subfolder_prefix="cc_en", aliases=("dolma",)),
)}
SOURCE_NAMES = tuple(SOURCES)
COMPONENTS = {name: spec.component for name, spec in SOURCES.items()}  # source -> released component
INPUT_FOLDERS = {name: spec.folder for name, spec in SOURCES.items()}  # source -> folder under --input
# what a component's shards hold (shards/<component>/<role>/): every training document, the anneal set
# (training documents too), the held-out documents
ROLES = ("train", "anneal", "val")


@dataclass(frozen=True)
class Piece:
    """Row groups [first_group, end_group) of a parquet file, whose first row is the file's row `first_row`."""
    first_group: int
    end_group: int
    first_row: int


@dataclass(frozen=True)
class SourceFile:
    """One input file, one piece of a large one (`ingest.split_mb`) or a bundle of small ones
    (`ingest.bundle_mb`): the unit of work (a partition).

    The pieces of a file share its `rel`, `id_prefix` and `partition`, and rows count from the file's
    start, so `nemo_id` and provenance are those of the whole file. A bundle is consecutive small
    files of one source, subfolder, id prefix and format, read one after the other into one
    partition; its own fields are its first member's, and every member keeps its `nemo_id`s and
    provenance (ingest reads each member as the file it is)."""
    source: str
    url: str          # absolute local path or fsspec URL
    rel: str          # path relative to the source folder (provenance: `src_file`)
    fmt: str
    id_prefix: str
    partition: int    # index among the files with the same id_prefix
    piece: Piece | None = None  # None: the whole file
    members: tuple[SourceFile, ...] = ()  # a bundle's files, in order; () for a file or a piece

    @property
    def part_name(self) -> str:
        """File-system-safe name of this partition's outputs: `part_name(rel)`; for a piece
        `%rg<first row group>`, for a bundle `%b<members>` (`%r` and `%b` never occur in an encoded
        name, so a piece or a bundle cannot meet a file)."""
        name = part_name(self.rel)
        if self.piece is not None:
            return f"{name}%rg{self.piece.first_group:05d}"
        return f"{name}%b{len(self.members):05d}" if self.members else name

    @property
    def files(self) -> tuple[SourceFile, ...]:
        """The input files this partition reads: a bundle's members, else itself."""
        return self.members or (self,)

    @property
    def key(self) -> str:
        """The input a completion marker was written for: the url; for a bundle the first member's url
        and a digest of every member's `rel` (a bundle whose members changed is not done, even under
        the same first file). The digest names members relative to the source folder, so the same
        corpus under another folder writes the same markers but for that folder's path."""
        if not self.members:
            return self.url
        digest = hashlib.sha256("\n".join(m.rel for m in self.members).encode()).hexdigest()[:16]
        return f"{self.url} +{len(self.members) - 1} files {digest}"


# leaves room for "<source>__", a piece's %rgNNNNN (a bundle's %bNNNNN), ".parquet", temp affixes (NAME_MAX 255)
MAX_PART_NAME_BYTES = 160


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


def id_prefix(source: str, rel: str) -> str:
    sub = SOURCES[source].subfolder(rel)
    if source == "dclm":
        m = re.search(r"global-shard_(\d+)_of_\d+", rel)
        return f"dclm-gs{m.group(1)}" if m else "dclm-gs00"
    if source == "fwe":
        return f"fwe2-{sub}" if sub else "fwe2-unknown"
    if source == "zyda":
        return sub or "zyda"
    return "dolma-cc"


def make_id(prefix: str, row: int, partition: int) -> str:
    return f"{prefix}-{row:010d}{partition:05d}"
