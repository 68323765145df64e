"""The shards stage: the pipeline's products, from the tokenize stage's per-partition tokens.

Per component, consecutive partitions are grouped into shards of about `shard_tokens` training
tokens (cut at partition boundaries, so the plan depends only on token counts and the same input
gives the same shards whatever the worker count); one Ray task per shard:
  shards/<component>/{train,anneal}/part_NNNNN.{bin,idx}, shards/<component>/val/part_00000
  (a shard that would hold no document is not written; its role is reported as empty)
Hub-layout parquet: publish/data/<component>/<subfolder>/part.N.parquet
Mixtures: shards/blends/{pretrain,anneal,valid}.json (paths relative to the run) and .txt
(Megatron's `--data-path` syntax, absolute prefixes; `reroot_blends` rewrites them).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.counts import Counts
from pipelines.core.outputs import write_json, write_table, write_text
from pipelines.core.schema import QUALITY_SCHEMA, read_docs
from pipelines.core.sources import COMPONENTS, SOURCES
from pipelines.core.stage import GlobalStage
from pipelines.tokens.indexed import write_indexed


def plan_shards(token_counts: list[int], target: int) -> list[list[int]]:
    """Consecutive groups of partitions holding about `target` tokens each."""
    groups, current, size = [], [], 0
    for i, n in enumerate(token_counts):
        current.append(i)
        size += n
        if size >= target:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    return groups


def write_shard(prefix: Path, token_files: list[Path], select: str) -> dict:
    """Concatenate the selected documents of `token_files` into one indexed shard; none is written
    when no document is selected (Megatron cannot memory-map an empty .bin)."""
    parts, lengths, docs = [], [], 0
    for path in token_files:
        t = pq.read_table(path)
        mask = {"train": pc_equal(t, "split", "train"), "val": pc_equal(t, "split", "val"),
                "anneal": t.column("anneal").to_numpy(zero_copy_only=False)}[select]
        t = t.filter(pa.array(mask))
        col = t.column("tokens").combine_chunks()
        parts.append(col.values.to_numpy(zero_copy_only=False).astype(np.uint16))
        lengths.append(np.diff(col.offsets.to_numpy()))
        docs += t.num_rows
    tokens = np.concatenate(parts) if parts else np.zeros(0, np.uint16)
    lens = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    if docs:
        write_indexed(prefix, tokens, lens)
    return {"prefix": str(prefix), "documents": docs, "tokens": int(lens.sum())}


def pc_equal(table: pa.Table, column: str, value: str) -> np.ndarray:
    return np.array(table.column(column).to_pylist()) == value


def publish_partition(src: Path, dest: Path) -> int:
    """One Hub-layout parquet file: the documents with their provenance, native and quality columns."""
    table = read_docs(src)
    write_table(dest, table.select(QUALITY_SCHEMA.names))
    return table.num_rows


class ShardsStage(GlobalStage):
    name = "shards"
    writes_docs = False  # its products are shards, blends and Hub parquet

    def run(self, ex, upstream: dict[str, Counts]) -> dict[str, Counts]:
        cfg = ex.cfg.shards
        stats = [c.figures for c in ex.partition_counts["tokenize"]]
        out = ex.out
        jobs, meta = [], []
        write = ex.remote(write_shard, self.name)
        for source, component in COMPONENTS.items():
            files = [(sf, s) for sf, s in zip(ex.files, stats) if sf.source == source]
            if not files:
                continue
            token_files = [out / "tokenize" / source / f"{sf.part_name}.parquet" for sf, _ in files]
            for split, key in (("train", "tokens"), ("anneal", "tokens_anneal")):
                counts = [s[key] - (s["tokens_val"] if split == "train" else 0) for _, s in files]
                for k, group in enumerate(plan_shards(counts, cfg.shard_tokens)):
                    prefix = out / "shards" / component / split / f"part_{k:05d}"
                    jobs.append(write.remote(prefix, [token_files[i] for i in group], split))
                    meta.append((source, component, split))
            jobs.append(write.remote(out / "shards" / component / "val" / "part_00000", token_files, "val"))
            meta.append((source, component, "val"))
            if cfg.publish_parquet:
                publish = ex.remote(publish_partition, self.name)
                counters: dict[str, int] = {}
                for sf, _ in files:
                    parts = PurePosixPath(sf.rel).parts
                    sub = SOURCES[source].subfolder(sf.rel) or (parts[0] if len(parts) > 1 else "default")
                    n = counters.get(sub, 0)
                    counters[sub] = n + 1
                    jobs.append(publish.remote(ex.partition(self.name, sf).docs,
                                               out / "publish" / "data" / component / sub / f"part.{n}.parquet"))
                    meta.append((source, component, "publish"))
        results = ex.wait(jobs, self.name, sum(u.out for u in upstream.values()))
        summary = {c: {"train_tokens": 0, "val_tokens": 0, "anneal_tokens": 0, "train_shards": [], "anneal_shards": [],
                       "val_shards": [], "val_documents": 0, "published_documents": 0} for c in COMPONENTS.values()}
        for (_source, component, split), r in zip(meta, results):
            c = summary[component]
            if split == "publish":
                c["published_documents"] += r
                continue
            c[f"{split}_tokens"] += r["tokens"]
            if split == "val":
                c["val_documents"] = r["documents"]
            if r["documents"]:
                c[f"{split}_shards"].append({"path": str(Path(r["prefix"]).relative_to(out)), "tokens": r["tokens"],
                                             "documents": r["documents"]})
        summary = {c: v for c, v in summary.items() if v["train_shards"] or v["val_shards"] or v["anneal_shards"]}
        for v in summary.values():
            v["empty_roles"] = [role for role in ROLES if not v[f"{role}_shards"]]
        blends = write_blends(out, summary, cfg)
        ex.details[self.name] = {"components": summary, "mixtures": {k: blends[k] for k in ("pretrain", "anneal")},
                                  "validation": blends["valid"]}
        return {s: Counts(s, read=u.out, out=u.out, chars_out=u.chars_out) for s, u in upstream.items()}


ROLES = ("train", "anneal", "val")


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
