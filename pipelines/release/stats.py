"""The run report: `zyda2.py stats RUN_DIR` -> RUN_DIR/stats/report.html and one PNG per plot.

It reads only what a finished run wrote, and only the columns it needs: `report.json` (accounting,
tokens, mixtures), `manifest.json` (config, seconds per stage), `dedup/summary.json` (cluster sizes)
and three columns of `dedup/decisions/` (cluster membership). Memory stays bounded on a full run:
decisions are aggregated in passes, each over one slice of cluster ids (at most `rows_per_pass`
rows in memory), and score distributions come from every k-th file of a source, at most
`sample_docs` documents; the page says when it sampled.

The page is self-contained (PNGs as data URIs, inline CSS, a Content-Security-Policy that forbids
anything else, so a stray external reference fails loudly in a browser) and byte-identical for the
same run: PNGs carry no software/time metadata and every figure is drawn in a fixed order.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DOC_STAGES = ("ingest", "heuristic_filter", "dedup", "quality_filter")  # stages that write documents
SCORE_COLUMNS = {"quality_prob": "classifier P(High)", "int_score": "FineWeb-Edu int_score",
                 "dclm_fasttext_prob": "DCLM fastText probability"}
NEMO_ID_DIGITS = 15  # a nemo_id ends in its 10-digit row and 5-digit partition (pipelines/sources.make_id)
STYLE = {"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "axes.spines.top": False,
         "axes.spines.right": False, "svg.hashsalt": "zyda2", "path.simplify": False}


class StatsError(RuntimeError):
    """The folder cannot be reported on (not a finished run); the message says why."""


@dataclass
class Plot:
    name: str
    title: str
    caption: str
    png: bytes = b""

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


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


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StatsError(f"{path.parent} has no {path.name}: {what}") from None
    except json.JSONDecodeError as e:
        raise StatsError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); rerun the pipeline") from None


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


# ---- dedup: cluster sizes, source overlap, who was removed in favour of whom

def _cluster_slice(ids: pa.ChunkedArray, passes: int) -> np.ndarray:
    """Which pass a cluster id belongs to: its trailing row+partition digits modulo `passes`."""
    digits = pc.cast(pc.utf8_slice_codeunits(ids, -NEMO_ID_DIGITS), pa.int64())
    return digits.to_numpy() % passes


def dedup_overlap(run: Path, sources: list[str], rows_per_pass: int = 5_000_000) -> Overlap:
    """Aggregate dedup/decisions (one row per document in a cluster of 2+) per cluster, in as many
    passes over slices of cluster ids as keep at most `rows_per_pass` rows in memory."""
    files = _parquet_files(run / "dedup" / "decisions")
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
    touch a source does not copy it)."""
    found = None
    for stage in DOC_STAGES[: DOC_STAGES.index(upto) + 1]:
        if _parquet_files(run / stage / source):
            found = run / stage / source
    return found


def sample_column(folder: Path, column: str, sample_docs: int) -> tuple[np.ndarray, int, int]:
    """(non-null values of `column` in every k-th file, documents read, documents in the folder);
    k is the smallest stride that reads at most about `sample_docs` documents."""
    files = _parquet_files(folder)
    if not files or column not in pq.read_schema(files[0]).names:
        return np.zeros(0), 0, 0
    rows = [pq.read_metadata(f).num_rows for f in files]
    stride = max(1, math.ceil(sum(rows) / sample_docs))
    picked = files[::stride]
    values = [pq.read_table(f, columns=[column]).column(column) for f in picked]
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


# ---- plots

def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure  # imported here: 0.2 s that only this command should pay
    return Figure(figsize=(width, height), layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _colors(names: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps
    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def plot_flow(report: dict) -> Figure:
    stages, sources = report["stages"], list(report["sources"])
    colors = _colors(sources)
    fig = _figure(10, 3.6)
    for ax, key, label in zip(fig.subplots(1, 2), ("out", "chars_out"), ("documents", "characters (millions)")):
        bottom = np.zeros(len(stages))
        for s in sources:
            st = report["sources"][s]["stages"]
            vals = np.array([st.get(x, {}).get(key, 0) for x in stages], float) / (1e6 if key == "chars_out" else 1)
            ax.bar(stages, vals, bottom=bottom, label=s, color=colors[s])
            bottom += vals
        ax.set_ylabel(f"{label} after the stage")
        ax.tick_params(axis="x", rotation=25)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), fontsize=8, frameon=False, loc="outside right upper")
    return fig


def plot_removals(report: dict) -> Figure:
    sources = list(report["sources"])
    reasons = sorted({r for s in sources for r in report["sources"][s]["removed"]} |
                     ({"quarantined"} if report["totals"]["quarantined"] else set()))
    colors = _colors(reasons)
    fig = _figure(10, 0.6 + 0.45 * len(sources) + 0.2 * len(reasons))
    ax = fig.subplots()
    left = np.zeros(len(sources))
    for r in reasons:
        vals = np.array([report["sources"][s]["quarantined"] if r == "quarantined"
                         else report["sources"][s]["removed"].get(r, 0) for s in sources], float)
        ax.barh(sources, vals, left=left, label=r, color=colors[r])
        left += vals
    ax.set_xlabel("documents removed")
    ax.invert_yaxis()
    if reasons:
        ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncols=3)
    return fig


def plot_tokens(components: dict) -> Figure:
    names = list(components)
    fig = _figure(10, 0.8 + 0.45 * len(names))
    ax = fig.subplots()
    left = np.zeros(len(names))
    for key, color in (("train_tokens", "#4c72b0"), ("val_tokens", "#dd8452"), ("anneal_tokens", "#55a868")):
        vals = np.array([components[c][key] for c in names], float) / 1e6
        ax.barh(names, vals, left=left, label=key.replace("_tokens", ""), color=color)
        left += vals
    ax.set_xlabel("tokens (millions); anneal documents are also counted in train")
    ax.invert_yaxis()
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_cluster_sizes(sizes: dict[int, int]) -> Figure:
    fig = _figure(5, 3.4)
    ax = fig.subplots()
    if len(sizes) <= 30:
        ax.bar(range(len(sizes)), list(sizes.values()), color="#4c72b0", tick_label=[str(k) for k in sizes])
        ax.set_xlabel("cluster size (documents)")
    else:
        edges = np.unique(np.geomspace(2, max(sizes) + 1, 25).astype(int))
        ax.hist(list(sizes), bins=edges, weights=list(sizes.values()), color="#4c72b0")
        ax.set_xscale("log")
        ax.set_xlabel("cluster size (documents, log bins)")
    ax.set_yscale("log")
    ax.set_ylabel("clusters")
    return fig


def _heatmap(ax, m: np.ndarray, labels: list[str], title: str) -> None:
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    top = m.max() or 1
    for (a, b), v in np.ndenumerate(m):
        ax.text(b, a, f"{v:,}", ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "black")
    ax.set_title(title, fontsize=9)
    ax.spines[:].set_visible(False)


def plot_overlap(overlap: Overlap) -> Figure:
    fig = _figure(10, 4.2)
    a, b = fig.subplots(1, 2)
    _heatmap(a, overlap.shared(), overlap.sources, "clusters holding both sources")
    _heatmap(b, overlap.removed_for, overlap.sources, "documents of the row's source removed,\n"
             "kept in the column's source")
    return fig


def plot_scores(scores: list[Scores]) -> Figure:
    fig = _figure(10, 3.2 * math.ceil(len(scores) / 2))
    axes = fig.subplots(math.ceil(len(scores) / 2), 2, squeeze=False).ravel()
    for ax, s in zip(axes, scores):
        if s.column == "int_score":
            values = np.arange(int(min(s.after.min(), s.before.min(initial=9))), int(s.after.max()) + 1)
            width = 0.4 if len(s.before) else 0.8
            if len(s.before):
                ax.bar(values - width / 2, [(s.before == v).sum() for v in values], width, label="before", color="#aaa")
            ax.bar(values + (width / 2 if len(s.before) else 0), [(s.after == v).sum() for v in values], width,
                   label="kept", color="#4c72b0")
            ax.set_xticks(values)
        else:
            bins = np.linspace(0, 1, 21)
            if len(s.before):
                ax.hist(s.before, bins=bins, label="before", color="#aaa")
            ax.hist(s.after, bins=bins, label="kept", color="#4c72b0")
        ax.set_title(f"{s.source}: {SCORE_COLUMNS[s.column]}", fontsize=9)
        ax.set_ylabel("documents")
        ax.legend(fontsize=8, frameon=False)
    for ax in axes[len(scores):]:
        ax.set_visible(False)
    return fig


def plot_mixtures(blends: dict[str, list[dict]]) -> Figure:
    comps = sorted({b["component"] for blend in blends.values() for b in blend})
    colors = _colors(comps)
    fig = _figure(10, 1.2 + 0.5 * len(blends))
    ax = fig.subplots()
    for name, blend in blends.items():
        left = 0.0
        for comp in comps:
            for role, hatch in (("anneal", ""), ("replay", "//")):
                w = sum(b["weight"] for b in blend if b["component"] == comp and
                        (b.get("role", "anneal") == role))
                if w:
                    ax.barh(name, w, left=left, color=colors[comp], hatch=hatch, edgecolor="white", label=comp)
                    left += w
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, frameon=False, loc="upper center",
              bbox_to_anchor=(0.5, -0.3), ncols=4)
    ax.set_xlabel("sampling weight (hatched: replay of the pretraining mix)")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    return fig


def plot_throughput(rows: list[dict]) -> Figure:
    fig = _figure(10, 0.8 + 0.4 * len(rows))
    ax = fig.subplots()
    names = [r["stage"] for r in rows]
    ax.barh(names, [r["seconds"] for r in rows], color="#4c72b0")
    for i, r in enumerate(rows):
        if r["docs_per_s"]:
            ax.text(r["seconds"], i, f"  {r['docs_per_s']:,.0f} docs/s", va="center", fontsize=8)
    ax.set_xlabel("wall seconds")
    ax.invert_yaxis()
    return fig


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


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.6f}" if abs(v) < 1 else f"{v:,.2f}"


# ---- the page

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>zyda2 run report: {{ run_name }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .6em 0 1.4em; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 9px; text-align: right; }
th:first-child, td:first-child, td.t { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption, .note { color: #555; font-size: 13px; }
code { background: #f3f3f3; padding: 0 3px; }
</style>
</head>
<body>
<h1>zyda2 run report: {{ run_name }}</h1>
<p>run folder <code>{{ run_dir }}</code> · status <b>{{ status }}</b> · config hash <code>{{ config_hash }}</code>
 · commit <code>{{ git_commit }}</code> · started {{ started_at }}</p>
<p>read <b data-report='["totals","read"]'>{{ fmt(totals.read) }}</b> documents: kept
<b data-report='["totals","kept"]'>{{ fmt(totals.kept) }}</b>, removed
<b data-report='["totals","removed"]'>{{ fmt(totals.removed) }}</b>, quarantined
<b data-report='["totals","quarantined"]'>{{ fmt(totals.quarantined) }}</b>;
accounting {{ "balanced" if totals.balanced else "NOT balanced" }}.</p>

{% macro fig(p) %}<figure id="plot-{{ p.name }}"><img src="{{ p.data_uri }}" alt="{{ p.title }}">
<figcaption>{{ p.caption }}</figcaption></figure>{% endmacro %}

<section id="accounting"><h2>Documents and tokens per source through each stage</h2>
<table><tr><th>source</th><th>read</th>{% for st in stages %}<th>after {{ st }}</th>{% endfor %}
<th>removed</th><th>quarantined</th><th>kept</th><th>tokens</th></tr>
{% for s, r in sources.items() %}<tr><td>{{ s }}</td>
<td data-report='{{ path("sources", s, "read") }}'>{{ fmt(r.read) }}</td>
{% for st in stages %}{% if st in r.stages %}<td data-report='{{ path("sources", s, "stages", st, "out") }}'>{{ fmt(r.stages[st].out) }}</td>{% else %}<td>—</td>{% endif %}{% endfor %}
<td>{{ fmt(r.removed.values() | sum) }}</td>
<td data-report='{{ path("sources", s, "quarantined") }}'>{{ fmt(r.quarantined) }}</td>
<td data-report='{{ path("sources", s, "kept") }}'>{{ fmt(r.kept) }}</td>
{% if "tokenize" in r.stages %}<td data-report='{{ path("sources", s, "stages", "tokenize", "tokens") }}'>{{ fmt(r.stages.tokenize.tokens) }}</td>{% else %}<td>—</td>{% endif %}
</tr>{% endfor %}</table>
{{ fig(plots.flow) }}
<h3>Removed, by stage and reason</h3>
<table><tr><th>source</th><th>stage:reason</th><th>documents</th></tr>
{% for s, r in sources.items() %}{% for reason, n in r.removed.items() %}<tr><td>{{ s }}</td><td class="t">{{ reason }}</td>
<td data-report='{{ path("sources", s, "removed", reason) }}'>{{ fmt(n) }}</td></tr>{% endfor %}
{% for reason, n in r.quarantine_reasons.items() %}<tr><td>{{ s }}</td><td class="t">quarantine:{{ reason }}</td>
<td data-report='{{ path("sources", s, "quarantine_reasons", reason) }}'>{{ fmt(n) }}</td></tr>{% endfor %}{% endfor %}
</table>
{{ fig(plots.removals) }}
{% if components %}<h3>Tokens per component</h3>
<table><tr><th>component</th><th>train</th><th>validation</th><th>anneal</th><th>train shards</th></tr>
{% for c, v in components.items() %}<tr><td>{{ c }}</td>
{% for key in ("train_tokens", "val_tokens", "anneal_tokens") %}<td data-report='{{ path("details", "shards", "components", c, key) }}'>{{ fmt(v[key]) }}</td>{% endfor %}
<td>{{ v.train_shards | length }}</td></tr>{% endfor %}</table>
{{ fig(plots.tokens) }}{% endif %}
</section>

<section id="dedup"><h2>Cross-deduplication</h2>
{% if overlap %}<p>{{ fmt(overlap.clusters) }} clusters of 2+ documents holding {{ fmt(overlap.documents) }} documents
({% if summary %}<span data-summary='["clusters"]'>{{ fmt(summary.clusters) }}</span> in <code>dedup/summary.json</code>; {% endif %}
bands x rows {{ dedup_cfg.bands }} x {{ dedup_cfg.rows }}, mode <code>{{ dedup_cfg.mode }}</code>, source rank
{{ dedup_cfg.source_rank | join(" > ") }}){% if overlap.passes > 1 %}; decisions aggregated in {{ overlap.passes }} passes{% endif %}.</p>
{{ fig(plots.cluster_sizes) }}
<table id="cluster-sizes"><tr><th>cluster size</th><th>clusters</th></tr>
{% for k, v in overlap.sizes.items() %}<tr><td>{{ k }}</td><td data-size="{{ k }}">{{ fmt(v) }}</td></tr>{% endfor %}</table>
{{ fig(plots.overlap) }}
<table id="overlap"><tr><th>clusters holding both</th>{% for s in overlap.sources %}<th>{{ s }}</th>{% endfor %}</tr>
{% for a in overlap.sources %}<tr><td>{{ a }}</td>{% for b in overlap.sources %}<td data-overlap="{{ a }},{{ b }}">{{ fmt(shared[index_of(a)][index_of(b)]) }}</td>{% endfor %}</tr>{% endfor %}</table>
<table id="combos"><tr><th>sources in the cluster</th><th>clusters</th></tr>
{% for names, n in combos %}<tr><td>{{ names }}</td><td>{{ fmt(n) }}</td></tr>{% endfor %}</table>
{% else %}<p class="note">This run has no dedup decisions.</p>{% endif %}
</section>

<section id="quality"><h2>Quality scores</h2>
{% if scores %}{{ fig(plots.scores) }}
<table><tr><th>source</th><th>score</th><th>documents read (kept)</th><th>of</th><th>median kept</th></tr>
{% for s in scores %}<tr><td>{{ s.source }}</td><td class="t">{{ score_names[s.column] }}</td><td>{{ fmt(s.read) }}</td>
<td>{{ fmt(s.total) }}</td><td>{{ fmt(median(s.after)) }}</td></tr>{% endfor %}</table>
<p class="note">Classifier scores exist only for documents the classifier kept: the quality stage writes survivors
only. {% if sampled %}Sampled: every k-th file, at most {{ fmt(sample_docs) }} documents per source.{% endif %}</p>
{% else %}<p class="note">This run has no quality scores.</p>{% endif %}
</section>

<section id="mixtures"><h2>Mixture composition</h2>
{% if mixtures %}{{ fig(plots.mixtures) }}
<table><tr><th>mixture</th><th>component</th><th>weight</th></tr>
{% for m, v in mixtures.items() %}{% for c, w in v.shares.items() %}<tr><td>{{ m }}</td><td class="t">{{ c }}</td>
<td data-report='{{ path("details", "shards", "mixtures", m, "shares", c) }}'>{{ fmt(w) }}</td></tr>{% endfor %}
<tr><td>{{ m }}</td><td class="t">tokens</td><td data-report='{{ path("details", "shards", "mixtures", m, "tokens") }}'>{{ fmt(v.tokens) }}</td></tr>{% endfor %}</table>
{% else %}<p class="note">This run wrote no shards.</p>{% endif %}
</section>

<section id="throughput"><h2>Throughput per stage</h2>
{{ fig(plots.throughput) }}
<table><tr><th>stage</th><th>seconds</th><th>documents processed</th><th>docs/s</th><th>tokens/s</th></tr>
{% for r in throughput %}<tr><td>{{ r.stage }}</td><td data-manifest='{{ path("stages", r.stage, "seconds") }}'>{{ fmt(r.seconds) }}</td>
<td>{{ fmt(r.docs) }}</td><td>{{ fmt(r.docs_per_s) }}</td><td>{{ fmt(r.tokens_per_s) }}</td></tr>{% endfor %}</table>
<p class="note">Wall seconds from <code>manifest.json</code> of the run as it finished (a resumed stage counts only its last attempt).</p>
</section>
</body>
</html>
"""


def write_stats(run_dir: Path, out_dir: Path | None = None, sample_docs: int = 200_000,
                rows_per_pass: int = 5_000_000) -> Path:
    """Write `report.html` and its PNGs into `out_dir` (default RUN_DIR/stats); return the page's path."""
    run = Path(run_dir)
    if sample_docs < 1 or rows_per_pass < 1:
        raise StatsError(f"--sample-docs and --rows-per-pass must be at least 1 (got {sample_docs}, {rows_per_pass})")
    if not run.is_dir():
        raise StatsError(f"{run} is not a folder")
    report = _read_json(run / "report.json", "not a finished zyda2 run (finish it with `zyda2.py run ... --resume`)")
    manifest = _read_json(run / "manifest.json", "not a zyda2 run folder")
    if not report.get("totals", {}).get("kept"):
        t = report.get("totals", {})
        raise StatsError(f"{run} kept no document (read {t.get('read', 0):,}, removed {t.get('removed', 0):,}, "
                         f"quarantined {t.get('quarantined', 0):,}; reasons in {run}/report.json and "
                         f"{run}/quarantine/): nothing to plot")
    summary_path = run / "dedup" / "summary.json"
    summary = _read_json(summary_path, "")["summary"] if summary_path.exists() else None
    cfg = manifest.get("config", {})
    sources = list(report["sources"])
    details = report.get("details", {})
    components = details.get("shards", {}).get("components", {})
    mixtures = details.get("shards", {}).get("mixtures", {})
    blends = {name: _read_json(run / "shards" / "blends" / f"{name}.json", "")["shards"]
              for name in mixtures if (run / "shards" / "blends" / f"{name}.json").exists()}

    overlap = dedup_overlap(run, sources, rows_per_pass) if _parquet_files(run / "dedup" / "decisions") else None
    scores = quality_scores(run, sources, sample_docs)
    throughput = throughput_rows(report, manifest)

    from matplotlib import rc_context
    plots: dict[str, Plot] = {}
    with rc_context(STYLE):
        def add(name, title, caption, fig):
            plots[name] = Plot(name, title, caption, _png(fig))
        add("flow", "documents and characters per stage", "Documents and characters after each stage, stacked by "
            "source (report.json).", plot_flow(report))
        add("removals", "documents removed", "Documents removed per source, by stage and reason.", plot_removals(report))
        if components:
            add("tokens", "tokens per component", "Tokens per released component and split.", plot_tokens(components))
        if overlap:
            add("cluster_sizes", "cluster sizes", "Near-duplicate clusters by size (dedup/decisions).",
                plot_cluster_sizes(overlap.sizes))
            add("overlap", "cross-source overlap", "Left: clusters holding documents of both sources (diagonal: "
                "clusters holding the source). Right: duplicates removed, by the source whose copy was kept.",
                plot_overlap(overlap))
        if scores:
            add("scores", "quality scores", "Score distributions before the quality stage (grey, where the score "
                "existed before it) and of the kept documents (blue).", plot_scores(scores))
        if blends:
            add("mixtures", "mixture composition", "Sampling weights of the pretraining and annealing blends "
                "(shards/blends/*.json).", plot_mixtures(blends))
        add("throughput", "throughput per stage", "Wall seconds per stage; labels: documents per second.",
            plot_throughput(throughput))

    shared = overlap.shared().tolist() if overlap else None
    combos = [(" + ".join(s for i, s in enumerate(sources) if mask >> i & 1), n)
              for mask, n in sorted(overlap.combos.items(), key=lambda kv: (-kv[1], kv[0]))] if overlap else []
    import jinja2
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        run_name=manifest.get("run_name", run.name), run_dir=str(run), status=manifest.get("status"),
        config_hash=manifest.get("config_hash"), git_commit=manifest.get("git_commit"),
        started_at=manifest.get("started_at"), totals=report["totals"], stages=report["stages"],
        sources=report["sources"], components=components, mixtures=mixtures, plots=plots, overlap=overlap,
        summary=summary, dedup_cfg=cfg.get("dedup", {}), shared=shared, combos=combos,
        index_of=sources.index, scores=scores, score_names=SCORE_COLUMNS,
        sampled=any(s.read < s.total for s in scores), sample_docs=sample_docs, throughput=throughput,
        fmt=_fmt, median=lambda a: float(np.median(a)), path=lambda *keys: json.dumps(keys))

    out = Path(out_dir) if out_dir else run / "stats"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    for p in plots.values():
        _write(out / f"{p.name}.png", p.png)
    _write(out / "report.html", html.encode())
    return out / "report.html"


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
