"""The run report's plots (`zyda2.py stats`): one matplotlib figure per figure of `stats_data`.

Every figure is drawn in a fixed order and saved without software/time metadata, so the same run
gives the same PNG bytes. matplotlib is imported inside the functions: 0.2 s that only this command
should pay.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from pipelines.release.stats_data import SCORE_COLUMNS, Overlap, Scores

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STYLE = {"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "axes.spines.top": False,
         "axes.spines.right": False, "svg.hashsalt": "zyda2", "path.simplify": False}


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure  # imported here: 0.2 s that only this command should pay
    return Figure(figsize=(width, height), layout="constrained")


def png_bytes(fig: Figure) -> bytes:
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
