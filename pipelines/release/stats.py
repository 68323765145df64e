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
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.core.outputs import atomic_path
from pipelines.release.stats_data import (
    SCORE_COLUMNS,
    StatsError,
    dedup_overlap,
    parquet_files,
    quality_scores,
    read_run_json,
    throughput_rows,
)
from pipelines.release.stats_plots import (
    STYLE,
    plot_cluster_sizes,
    plot_flow,
    plot_mixtures,
    plot_overlap,
    plot_removals,
    plot_scores,
    plot_throughput,
    plot_tokens,
    png_bytes,
)


@dataclass
class Plot:
    name: str
    title: str
    caption: str
    png: bytes = b""

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


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
        raise StatsError(f"--sample-docs and --rows-per-pass must be at least 1 "
                         f"(got {sample_docs}, {rows_per_pass})")
    if not run.is_dir():
        raise StatsError(f"{run} is not a folder")
    report = read_run_json(run / "report.json", "not a finished zyda2 run (finish it with `zyda2.py run ... --resume`)")
    manifest = read_run_json(run / "manifest.json", "not a zyda2 run folder")
    if not report.get("totals", {}).get("kept"):
        t = report.get("totals", {})
        raise StatsError(f"{run} kept no document (read {t.get('read', 0):,}, removed {t.get('removed', 0):,}, "
                         f"quarantined {t.get('quarantined', 0):,}; reasons in {run}/report.json and "
                         f"{run}/quarantine/): nothing to plot")
    summary_path = run / "dedup" / "summary.json"
    summary = read_run_json(summary_path, "")["summary"] if summary_path.exists() else None
    cfg = manifest.get("config", {})
    sources = list(report["sources"])
    details = report.get("details", {})
    components = details.get("shards", {}).get("components", {})
    mixtures = details.get("shards", {}).get("mixtures", {})
    blends = {name: read_run_json(run / "shards" / "blends" / f"{name}.json", "")["shards"]
              for name in mixtures if (run / "shards" / "blends" / f"{name}.json").exists()}

    overlap = dedup_overlap(run, sources, rows_per_pass) if parquet_files(run / "dedup" / "decisions") else None
    scores = quality_scores(run, sources, sample_docs)
    throughput = throughput_rows(report, manifest)

    from matplotlib import rc_context
    plots: dict[str, Plot] = {}
    with rc_context(STYLE):
        def add(name, title, caption, fig):
            plots[name] = Plot(name, title, caption, png_bytes(fig))
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
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
