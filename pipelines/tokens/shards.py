"""The shards stage: the mixtures and the Hub layout over the shards the tokenize stage wrote.

The tokenize stage plans and writes the Megatron shards (tokenize.py); each of its partition markers
names the shard its documents went into, with their documents and tokens per role, so this stage
lists the shards without reading them:
  shards/<component>/{train,anneal,val}/part_NNNNN.{bin,idx}  (written by tokenize; a role without a
  document has no file and is reported in `empty_roles`)
Mixtures: shards/blends/{pretrain,anneal,valid}.json (paths relative to the run) and .txt
(Megatron's `--data-path` syntax, absolute prefixes; `reroot_blends` rewrites them).
Hub-layout parquet: publish/data/<component>/<subfolder>/part.N.parquet, consecutive partitions of a
subfolder packed into files of about `shards.publish_mb` MB of text (by the `chars_out` of the stage
that wrote their documents, so the layout depends on the input only), one Ray task per file.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.core.counts import Counts
from pipelines.core.outputs import PartitionWriter, write_json, write_text
from pipelines.core.schema import QUALITY_SCHEMA, read_docs
from pipelines.core.sources import COMPONENTS, ROLES, SOURCES
from pipelines.core.stage import GlobalStage


def publish_partitions(srcs: list[Path], dest: Path) -> int:
    """One Hub-layout parquet file from the documents of `srcs` (in order, one in memory at a time),
    with their provenance, native and quality columns; returns the documents written."""
    writer, rows = PartitionWriter(dest, QUALITY_SCHEMA), 0
    for src in srcs:
        table = read_docs(src).select(QUALITY_SCHEMA.names)
        writer.write_table(table)
        rows += table.num_rows
    writer.close()
    return rows


def publish_plan(files: list, chars: list[int], target_chars: float) -> list[tuple[str, str, list[int]]]:
    """(component, subfolder, partition indices) of each Hub parquet file: consecutive partitions of
    one component and subfolder, cut once a file holds `target_chars` characters."""
    plan, open_files = [], {}
    for i, sf in enumerate(files):
        key = (COMPONENTS[sf.source], SOURCES[sf.source].hub_subfolder(sf.rel))
        if key not in open_files:
            open_files[key] = [key[0], key[1], [], 0]
            plan.append(open_files[key])
        current = open_files[key]
        current[2].append(i)
        current[3] += chars[i]
        if current[3] >= target_chars:
            del open_files[key]
    return [(c, sub, idx) for c, sub, idx, _ in plan]


def shard_summary(partitions: list[Counts]) -> dict:
    """Per component, its shards per role (path, tokens, documents; only shards holding documents)
    and token totals, added up from the tokenize stage's partition counts (in file order, so each
    role's shards come in plan order)."""
    summary = {c: {"train_tokens": 0, "val_tokens": 0, "anneal_tokens": 0, "train_shards": [], "anneal_shards": [],
                   "val_shards": [], "val_documents": 0} for c in COMPONENTS.values()}
    shards: dict[tuple[str, str, str], dict] = {}
    for p in partitions:
        f, component = p.figures, COMPONENTS[p.source]
        roles = {"train": (p.out - f["docs_val"], f["tokens"] - f["tokens_val"]),
                 "anneal": (f["docs_anneal"], f["tokens_anneal"]), "val": (f["docs_val"], f["tokens_val"])}
        for role, (docs, tokens) in roles.items():
            shard = shards.setdefault((component, role, p.notes["shard"]), {
                "path": f"shards/{component}/{role}/{p.notes['shard']}", "tokens": 0, "documents": 0})
            shard["tokens"] += tokens
            shard["documents"] += docs
    for (component, role, _), shard in shards.items():
        c = summary[component]
        c[f"{role}_tokens"] += shard["tokens"]
        if role == "val":
            c["val_documents"] += shard["documents"]
        if shard["documents"]:
            c[f"{role}_shards"].append(shard)
    return summary


class ShardsStage(GlobalStage):
    name = "shards"
    writes_docs = False  # its products are blends and Hub parquet

    def run(self, ex, upstream: dict[str, Counts]) -> dict[str, Counts]:
        cfg = ex.cfg.shards
        out = ex.out
        summary = shard_summary(ex.partition_counts["tokenize"])
        for v in summary.values():
            v["published_documents"] = 0
        jobs, meta = [], []
        if cfg.publish_parquet:
            publish = ex.remote(publish_partitions, self.name)
            docs = [ex.partition(self.name, sf).docs for sf in ex.files]
            chars = [ex.docs_chars(self.name, sf) for sf in ex.files]
            counters: dict[tuple[str, str], int] = {}
            for component, sub, idx in publish_plan(ex.files, chars, cfg.publish_mb * 1e6):
                n = counters.get((component, sub), 0)
                counters[(component, sub)] = n + 1
                jobs.append(publish.remote([docs[i] for i in idx],
                                           out / "publish" / "data" / component / sub / f"part.{n}.parquet"))
                meta.append(component)
        published = ex.wait(jobs, self.name, sum(u.out for u in upstream.values())) if jobs else []
        for component, n in zip(meta, published):
            summary[component]["published_documents"] += n
        summary = {c: v for c, v in summary.items() if v["train_shards"] or v["val_shards"] or v["anneal_shards"]}
        for v in summary.values():
            v["empty_roles"] = [role for role in ROLES if not v[f"{role}_shards"]]
        blends = write_blends(out, summary, cfg)
        ex.details[self.name] = {"components": summary, "mixtures": {k: blends[k] for k in ("pretrain", "anneal")},
                                  "validation": blends["valid"]}
        return {s: Counts(s, read=u.out, out=u.out, chars_out=u.chars_out) for s, u in upstream.items()}


def write_blends(out: Path, summary: dict, cfg) -> dict:
    """Pretrain, anneal and validation mixtures: shard paths and sampling weights (token shares).

    `<name>.json` holds paths relative to the run folder (what `token_stream` reads); `<name>.txt` is
    Megatron's `--data-path` syntax (`weight prefix ...`) with absolute prefixes, so a launch works
    from any working directory. Only shards holding documents appear. Returns per mixture the
    weight shares per component and the tokens."""
    source_of = {c: s for s, c in COMPONENTS.items()}
    weights = {c: cfg.pretrain_weights.get(source_of[c], 0.0) for c in summary if summary[c]["train_tokens"]}
    weights = {c: w for c, w in weights.items() if w > 0}  # a weight-0 dataset is an empty one for Megatron
    total_w = sum(weights.values())
    pretrain = [{"path": sh["path"], "weight": weights[c] / total_w * sh["tokens"] / summary[c]["train_tokens"],
                 "component": c, "tokens": sh["tokens"], "documents": sh["documents"]}
                for c in weights for sh in summary[c]["train_shards"]]
    anneal_tokens = sum(summary[c]["anneal_tokens"] for c in summary)
    anneal = [{"path": sh["path"], "weight": (1 - cfg.anneal_replay_fraction) * sh["tokens"] / anneal_tokens,
               "component": c, "tokens": sh["tokens"], "documents": sh["documents"], "role": "anneal"}
              for c in summary for sh in summary[c]["anneal_shards"]] if anneal_tokens else []
    replay = cfg.anneal_replay_fraction if anneal else 1.0
    anneal += [{**p, "weight": p["weight"] * replay, "role": "replay"} for p in pretrain]
    # validation: every component's held-out shard, weighted by its tokens
    val_tokens = sum(summary[c]["val_tokens"] for c in summary)
    valid = [{"path": sh["path"], "weight": sh["tokens"] / val_tokens, "component": c, "tokens": sh["tokens"],
              "documents": sh["documents"]}
             for c in summary for sh in summary[c]["val_shards"]]
    mixtures = {}
    for name, blend in (("pretrain", pretrain), ("anneal", anneal), ("valid", valid)):
        write_json(out / "shards" / "blends" / f"{name}.json", {"shards": blend})
        shares: dict[str, float] = {}
        for b in blend:
            key = b["component"] + (":replay" if b.get("role") == "replay" else "")
            shares[key] = shares.get(key, 0.0) + b["weight"]
        mixtures[name] = {"shares": {k: round(v, 6) for k, v in sorted(shares.items())},
                          "tokens": sum(b["tokens"] for b in blend if b.get("role") != "replay")}
    reroot_blends(out)
    return mixtures


def reroot_blends(run: Path, root: str | None = None) -> list[Path]:
    """(Re)write a run's `shards/blends/*.txt` from its `*.json` with prefixes under `root` (default:
    the run folder's absolute path here), e.g. after the folder was moved or copied to a cluster's
    storage. `root` is taken as given (a path as the training nodes see it). Returns the files written.

    Raises FileNotFoundError when `run` has no blends."""
    run = Path(run)
    base = root.rstrip("/") if root else str(run.resolve())
    files = sorted((run / "shards" / "blends").glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{run} has no shards/blends/*.json: not a finished run folder")
    written = []
    for path in files:
        shards = json.loads(path.read_text())["shards"]
        text = " ".join(f"{b['weight']:.10f} {base}/{b['path']}" for b in shards)
        dest = path.with_suffix(".txt")
        write_text(dest, text + "\n")
        written.append(dest)
    return written
