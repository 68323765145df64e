"""Tokenize and shards: the pipeline's products.

tokenize  one Ray task per input partition: Mistral v0.1 ids (+EOS, optional BOS) of every kept
          document, its split (`val` when a hash of its split key falls under
          `shards.validation_fraction`, else `train`) and whether it belongs to the anneal set.
          The split key is the document's dedup cluster root when it is in a cluster, else its text,
          so identical texts and near-duplicates always land on the same side.
          -> tokenize/<source>/<part>.parquet
shards    per component, consecutive partitions are grouped into shards of about `shard_tokens`
          training tokens (cut at partition boundaries, so the plan depends only on token counts and
          the same input gives the same shards whatever the worker count); one Ray task per shard:
          shards/<component>/{train,anneal}/part_NNNNN.{bin,idx}, shards/<component>/val/part_00000
          (a shard that would hold no document is not written; its role is reported as empty)
          Hub-layout parquet: publish/data/<component>/<subfolder>/part.N.parquet
          Mixtures: shards/blends/{pretrain,anneal,valid}.json (paths relative to the run) and .txt
          (Megatron's `--data-path` syntax, absolute prefixes; `reroot_blends` rewrites them).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from pipelines.tokens.indexed import write_indexed
from pipelines.core.outputs import write_json, write_table
from pipelines.core.schema import QUALITY_SCHEMA, with_quality_columns
from pipelines.core.sources import SourceFile
from pipelines.core.stages import Stage, StageContext, run_partitions, sum_by_source, wait_all
from pipelines.tokens.encoder import cached_encoder

COMPONENTS = {"dclm": "dclm_crossdeduped", "fwe": "fwe3", "zyda": "zyda_crossdeduped-filtered",
              "dolma-cc": "dolma-cc_crossdeduped-filtered"}

TOKEN_SCHEMA = pa.schema([
    pa.field("nemo_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),   # train | val
    pa.field("anneal", pa.bool_(), nullable=False),   # in the anneal set (train documents only)
    pa.field("tokens", pa.large_list(pa.uint16()), nullable=False),
])


def is_validation(key: str, fraction: float) -> bool:
    """Stable, partition-independent choice: the first 8 bytes of sha1(key) as a fraction."""
    h = int.from_bytes(hashlib.sha1(key.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return h < fraction * 2**64


def split_keys(nemo_ids: list[str], texts: list[str], decisions: Path | None) -> list[str]:
    """What decides each document's split: `cluster:<root nemo_id>` for a member of a dedup cluster
    (from `decisions`, the partition's dedup/decisions file, if any), else `text:<text>`.

    Identical texts have identical MinHash signatures, so they are either all in one cluster or all
    unclustered: both rules send them to the same side, and so are all members of one cluster."""
    clusters: dict[str, str] = {}
    if decisions is not None and decisions.is_file():
        t = pq.read_table(decisions, columns=["nemo_id", "cluster_id"])
        clusters = dict(zip(t.column("nemo_id").to_pylist(), t.column("cluster_id").to_pylist()))
    return [f"cluster:{clusters[i]}" if i in clusters else f"text:{text}" for i, text in zip(nemo_ids, texts)]


def read_docs(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A stage's documents in QUALITY_SCHEMA (sources no classifier saw get null quality columns),
    or just `columns` of it."""
    names = pq.read_schema(path).names
    if "quality_pred" in names:
        return pq.read_table(path, columns=columns)
    if columns is None:
        return with_quality_columns(pq.read_table(path))
    table = pq.read_table(path, columns=[c for c in columns if c in names])  # only what is asked for
    for name in columns:
        if name not in names:
            field = QUALITY_SCHEMA.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(columns)


class TokenizeStage(Stage):
    name = "tokenize"

    def run(self, ctx: StageContext, upstream):
        tcfg, scfg = ctx.cfg.tokenize, ctx.cfg.shards
        docs_dirs = dict(ctx.docs_dirs)

        def task(sf: SourceFile) -> dict:
            stats = tokenize_partition(ctx.docs_path(sf, docs_dirs),
                                       ctx.out / self.name / sf.source / f"{sf.part_name}.parquet", sf.source, tcfg, scfg,
                                       ctx.out / "dedup" / "decisions" / f"{sf.source}__{sf.part_name}.parquet")
            ctx.progress.add.remote(self.name, stats["read"], stats["tokens"] * 2)
            return {"src_file": sf.rel, **stats}

        config_hash = ctx.cfg.section_hash("ingest", "heuristic_filter", "dedup", "quality_filter", "tokenize",
                                           "shards")
        stats = run_partitions(ctx, self.name, config_hash, task)
        ctx.partition_stats[self.name] = stats
        by_source = sum_by_source(stats, upstream)
        for src, agg in by_source.items():
            agg["chars_out"] = upstream[src]["chars_out"]
        return by_source


def tokenize_partition(docs: Path, dest: Path, source: str, tcfg, scfg, decisions: Path | None = None) -> dict:
    """Tokenize one partition's documents into `dest` (TOKEN_SCHEMA); return its counts.
    `decisions`: the partition's dedup decisions (cluster roots), which the split follows."""
    table = read_docs(docs, ["nemo_id", "text", "int_score", "quality_prob"])
    texts = table.column("text").to_pylist()
    ids, offsets = cached_encoder(tcfg.cache_units).encode_flat(texts, tcfg.add_bos, tcfg.append_eos)
    nemo_ids = table.column("nemo_id").to_pylist()
    split = np.array(["val" if is_validation(k, scfg.validation_fraction) else "train"
                      for k in split_keys(nemo_ids, texts, decisions)], dtype=object)
    val = split == "val"
    anneal = anneal_mask(table, source, scfg) & ~val
    lengths = np.diff(offsets)
    tokens = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(ids.astype(np.uint16), pa.uint16()))
    write_table(dest, pa.table({"nemo_id": nemo_ids, "split": split.tolist(), "anneal": anneal, "tokens": tokens},
                               schema=TOKEN_SCHEMA))
    return {"source": source, "read": table.num_rows, "out": table.num_rows, "removed": {}, "quarantined": 0,
            "chars_out": 0, "tokens": int(lengths.sum()),
            "tokens_val": int(lengths[val].sum()), "tokens_anneal": int(lengths[anneal].sum()),
            "docs_val": int(val.sum())}


def anneal_mask(table: pa.Table, source: str, cfg) -> np.ndarray:
    n = table.num_rows
    if source not in cfg.anneal_components:
        return np.zeros(n, bool)
    if source == "fwe":
        scores = table.column("int_score").to_numpy(zero_copy_only=False)
        return np.nan_to_num(scores.astype(float), nan=-1) >= cfg.anneal_fwe_min_int_score
    prob = table.column("quality_prob").to_numpy(zero_copy_only=False).astype(float)
    return np.nan_to_num(prob, nan=-1) >= cfg.anneal_min_quality_prob


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


class ShardsStage(Stage):
    name = "shards"

    def run(self, ctx: StageContext, upstream):
        cfg = ctx.cfg.shards
        stats = ctx.partition_stats["tokenize"]
        options = ctx.cfg.ray.task_options(self.name)
        jobs, meta = [], []
        write = ray.remote(write_shard).options(**options, max_retries=ctx.cfg.ray.max_retries)
        for source, component in COMPONENTS.items():
            files = [(sf, s) for sf, s in zip(ctx.files, stats) if sf.source == source]
            if not files:
                continue
            token_files = [ctx.out / "tokenize" / source / f"{sf.part_name}.parquet" for sf, _ in files]
            for split, key in (("train", "tokens"), ("anneal", "tokens_anneal")):
                counts = [s[key] - (s["tokens_val"] if split == "train" else 0) for _, s in files]
                for k, group in enumerate(plan_shards(counts, cfg.shard_tokens)):
                    prefix = ctx.out / "shards" / component / split / f"part_{k:05d}"
                    jobs.append(write.remote(prefix, [token_files[i] for i in group], split))
                    meta.append((source, component, split))
            jobs.append(write.remote(ctx.out / "shards" / component / "val" / "part_00000", token_files, "val"))
            meta.append((source, component, "val"))
            if cfg.publish_parquet:
                publish = ray.remote(publish_partition).options(**options)
                counters: dict[str, int] = {}
                for sf, _ in files:
                    parts = PurePosixPath(sf.rel).parts
                    sub = next((p for p in parts if p.startswith(("global-shard", "CC-MAIN", "zyda_", "cc_en"))),
                               parts[0] if len(parts) > 1 else "default")
                    n = counters.get(sub, 0)
                    counters[sub] = n + 1
                    jobs.append(publish.remote(ctx.docs_path(sf), ctx.out / "publish" / "data" / component / sub /
                                               f"part.{n}.parquet"))
                    meta.append((source, component, "publish"))
        results = wait_all(ctx, self.name, jobs, sum(u["out"] for u in upstream.values()))
        summary = {c: {"train_tokens": 0, "val_tokens": 0, "anneal_tokens": 0, "train_shards": [], "anneal_shards": [],
                       "val_shards": [], "val_documents": 0, "published_documents": 0} for c in COMPONENTS.values()}
        for (source, component, split), r in zip(meta, results):
            c = summary[component]
            if split == "publish":
                c["published_documents"] += r
                continue
            c[f"{split}_tokens"] += r["tokens"]
            if split == "val":
                c["val_documents"] = r["documents"]
            if r["documents"]:
                c[f"{split}_shards"].append({"path": str(Path(r["prefix"]).relative_to(ctx.out)), "tokens": r["tokens"],
                                             "documents": r["documents"]})
        summary = {c: v for c, v in summary.items() if v["train_shards"] or v["val_shards"] or v["anneal_shards"]}
        for v in summary.values():
            v["empty_roles"] = [role for role in ROLES if not v[f"{role}_shards"]]
        blends = write_blends(ctx.out, summary, cfg)
        ctx.details[self.name] = {"components": summary, "mixtures": {k: blends[k] for k in ("pretrain", "anneal")},
                                  "validation": blends["valid"]}
        return {s: {"in": u["out"], "out": u["out"], "removed": {}, "quarantined": 0, "chars_out": u["chars_out"]}
                for s, u in upstream.items()}


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
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, dest)
        written.append(dest)
    return written
