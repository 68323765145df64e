"""The figures of the run report (`zyda2.py stats`), computed from what a finished run wrote.

It reads only the columns it needs: `report.json` (accounting, tokens, mixtures), `manifest.json`
(seconds per stage), `dedup/summary.json` (cluster sizes) and three columns of `dedup/decisions/`
(cluster membership). Memory stays bounded on a full run: decisions are aggregated in passes, each
over one slice of cluster ids (at most `rows_per_pass` rows in memory), and score distributions come
from every k-th file of a source, at most `sample_docs` documents. `stats_plots` draws these figures,
`stats` puts them on the page.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.schema import document_columns, read_documents

SCORE_COLUMNS = {"quality_prob": "classifier P(High)", "int_score": "FineWeb-Edu int_score",
                 "dclm_fasttext_prob": "DCLM fastText probability"}
NEMO_ID_DIGITS = 15  # a nemo_id ends in its 10-digit row and 5-digit partition (pipelines/sources.make_id)


class StatsError(RuntimeError):
    """The folder cannot be reported on (not a finished run); the message says why."""


@dataclass
class Overlap:
    """Cluster membership aggregated from dedup/decisions."""
    sources: list[str]
    clusters: int = 0
    documents: int = 0
    sizes: dict[int, int] = field(default_factory=dict)        # cluster size -> clusters
    combos: dict[int, int] = field(default_factory=dict)       # bit mask of sources -> clusters
    removed_for: np.ndarray | None = None                      # [removed source, kept source] -> docs
    passes: int = 1

    def shared(self) -> np.ndarray:
        """[a, b] = clusters holding documents of both a and b (diagonal: clusters holding a)."""
        n = len(self.sources)
        m = np.zeros((n, n), np.int64)
        for mask, count in self.combos.items():
            present = [i for i in range(n) if mask >> i & 1]
            for a in present:
                for b in present:
                    m[a, b] += count
        return m


def read_run_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StatsError(f"{path.parent} has no {path.name}: {what}") from None
    except json.JSONDecodeError as e:
        raise StatsError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); rerun the pipeline") from None


def parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


# ---- dedup: cluster sizes, source overlap, who was removed in favour of whom

def _cluster_slice(ids: pa.ChunkedArray, passes: int) -> np.ndarray:
    """Which pass a cluster id belongs to: its trailing row+partition digits modulo `passes`."""
    digits = pc.cast(pc.utf8_slice_codeunits(ids, -NEMO_ID_DIGITS), pa.int64())
    return digits.to_numpy() % passes


def dedup_overlap(run: Path, sources: list[str], rows_per_pass: int = 5_000_000) -> Overlap:
    """Aggregate dedup/decisions (one row per document in a cluster of 2+) per cluster, in as many
    passes over slices of cluster ids as keep at most `rows_per_pass` rows in memory."""
    files = parquet_files(run / "dedup" / "decisions")
    total = sum(pq.read_metadata(f).num_rows for f in files)
    out = Overlap(sources=sources, removed_for=np.zeros((len(sources), len(sources)), np.int64),
                  passes=max(1, math.ceil(total / rows_per_pass)))
    index = {s: i for i, s in enumerate(sources)}
    for k in range(out.passes):
        parts = []
        for f in files:
            t = pq.read_table(f, columns=["cluster_id", "source", "keep"])
            if out.passes > 1:
                t = t.filter(pa.array(_cluster_slice(t.column("cluster_id"), out.passes) == k))
            parts.append(t)
        if not parts or not sum(p.num_rows for p in parts):
            continue
        t = pa.concat_tables(parts)
        # integer codes, then one sort: far faster than Arrow's group_by on string keys
        cluster = pc.dictionary_encode(t.column("cluster_id").combine_chunks()).indices.to_numpy().astype(np.int64)
        codes = pc.dictionary_encode(t.column("source").combine_chunks())
        unknown = set(codes.dictionary.to_pylist()) - set(index)
        if unknown:
            raise StatsError(f"dedup/decisions name sources {sorted(unknown)} that report.json does not have")
        lut = np.array([index[s] for s in codes.dictionary.to_pylist()], np.int64)
        keys = (cluster * len(sources) + lut[codes.indices.to_numpy()]) * 2 + \
            t.column("keep").to_numpy().astype(np.int64)
        keys, count = np.unique(keys, return_counts=True)  # one row per (cluster, source, keep)
        keep, src, cluster = keys % 2 == 1, keys // 2 % len(sources), keys // (2 * len(sources))
        n = int(cluster.max()) + 1
        sizes = np.bincount(cluster, weights=count, minlength=n).astype(np.int64)
        masks = np.zeros(n, np.int64)
        np.bitwise_or.at(masks, cluster, 1 << src)
        kept_source = np.full(n, -1, np.int64)
        kept_source[cluster[keep]] = src[keep]
        gone = ~keep & (kept_source[cluster] >= 0)
        np.add.at(out.removed_for, (src[gone], kept_source[cluster[gone]]), count[gone])
        out.clusters += n
        out.documents += int(count.sum())
        for values, target in ((sizes, out.sizes), (masks, out.combos)):
            for v, c in zip(*np.unique(values, return_counts=True)):
                target[int(v)] = target.get(int(v), 0) + int(c)
    out.sizes, out.combos = dict(sorted(out.sizes.items())), dict(sorted(out.combos.items()))
    return out


# ---- quality scores: the column that decided each source, before and after the quality stage

def _docs_folder(run: Path, source: str, upto: str) -> Path | None:
    """The folder holding `source`'s documents as stage `upto` left them (a stage that does not
    touch a source does not copy it). The stages and their order are the run's own (report.json)."""
    found = None
    stages = json.loads((run / "report.json").read_text())["stages"]
    for stage in stages[: stages.index(upto) + 1] if upto in stages else stages:
        files = parquet_files(run / stage / source)
        if files and document_columns(files[0]) is not None:  # documents, not tokens
            found = run / stage / source
    return found


def sample_column(folder: Path, column: str, sample_docs: int) -> tuple[np.ndarray, int, int]:
    """(non-null values of `column` in every k-th file, documents read, documents in the folder);
    k is the smallest stride that reads at most about `sample_docs` documents."""
    files = parquet_files(folder)
    if not files or column not in (document_columns(files[0]) or ()):
        return np.zeros(0), 0, 0
    rows = [pq.read_metadata(f).num_rows for f in files]
    stride = max(1, math.ceil(sum(rows) / sample_docs))
    picked = files[::stride]
    values = [read_documents(f, [column]).column(column) for f in picked]
    col = pa.chunked_array([c for v in values for c in v.chunks], values[0].type)
    read = len(col)
    col = pc.drop_null(col)
    return col.to_numpy().astype(float), read, sum(rows)


@dataclass
class Scores:
    source: str
    column: str
    before: np.ndarray   # documents entering the quality stage (empty if the column is made there)
    after: np.ndarray    # documents the run kept
    read: int
    total: int


def quality_scores(run: Path, sources: list[str], sample_docs: int) -> list[Scores]:
    out = []
    for source in sources:
        final = _docs_folder(run, source, "quality_filter")
        before = _docs_folder(run, source, "dedup")
        for column in SCORE_COLUMNS:
            after, read, total = sample_column(final, column, sample_docs) if final else (np.zeros(0), 0, 0)
            if len(after):
                prior = sample_column(before, column, sample_docs)[0] if before and before != final else np.zeros(0)
                out.append(Scores(source, column, prior, after, read, total))
                break
    return out


# ---- tables

def throughput_rows(report: dict, manifest: dict) -> list[dict]:
    """Seconds per stage (manifest) and the documents it processed (sources it left untouched excluded)."""
    rows = []
    for stage, info in manifest.get("stages", {}).items():
        docs = sum(r["stages"][stage]["in"] for r in report["sources"].values()
                   if stage in r["stages"] and not r["stages"][stage].get("untouched"))
        tokens = sum(r["stages"][stage].get("tokens", 0) for r in report["sources"].values() if stage in r["stages"])
        sec = info["seconds"]
        rows.append({"stage": stage, "seconds": sec, "docs": docs,
                     "docs_per_s": docs / sec if sec and docs else None,
                     "tokens_per_s": tokens / sec if sec and tokens else None})
    order = {s: i for i, s in enumerate(report["stages"])}
    return sorted(rows, key=lambda r: order.get(r["stage"], len(order)))
