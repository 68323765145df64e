"""The dedup stage: signatures -> buckets -> edges (-> verification) -> components -> decisions.

  1. signatures   one task per input partition; cached in dedup/signatures/<tag>/ and reused by
                  any later run whose shingling and hash parameters are the same (bands/rows may differ)
  2. buckets      map (one task per group of signature files, so G x P objects, not files x P):
                  (band key, doc) pairs hashed into P partitions; reduce: star edges per bucket
  3. verify       optional: exact char/word n-gram Jaccard of every candidate edge, edges below
                  `verify_threshold` dropped (the paper did not verify)
  4. components   alternating large-star / small-star on Ray (dedup/components.py)
  5. resolve      members shuffled by cluster root; source-rank resolution (dedup/resolve.py)
  6. apply        one task per group of input files (grouping.py) writes dedup/decisions/<source>__<part>.parquet
                  and the surviving documents dedup/<source>/<part>.parquet

Only steps 1 and 6 touch documents; 2-5 move 8-byte keys through Ray's object store, each task
holding one of P partitions. Cost for N docs, b bands, E candidate edges: signatures O(text);
shuffle 16·N·b bytes; components O(E) bytes per round over a few rounds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from dedup.components import connected_components, split_by
from dedup.lsh import bucket_edges, bucket_pairs, doc_keys
from dedup.minhash import jaccard, shingle_set
from dedup.resolve import KEEP, REASONS, cluster_stats, resolve
from dedup.signatures import read_signatures, signature_tag, write_signatures
from pipelines.core.config import DedupConfig
from pipelines.core.counts import Counts, by_source
from pipelines.core.outputs import read_json, write_json
from pipelines.core.schema import DOC_SCHEMA, documents_file, read_documents
from pipelines.core.sources import SOURCE_NAMES, SourceFile, make_id
from pipelines.core.stage import GlobalStage, Partition, StageOutput, input_bytes, write_marker, write_output

DECISION_SCHEMA = pa.schema([
    pa.field("nemo_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("src_file", pa.string(), nullable=False),
    pa.field("src_row", pa.int64(), nullable=False),
    pa.field("cluster_id", pa.string(), nullable=False),  # nemo_id of the cluster's smallest document key
    pa.field("keep", pa.bool_(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
])


def key_to_nemo_id(key, id_table: list[tuple[str, int]]) -> str:
    """nemo_id of a document key (file index << 32 | src_row); id_table[file] = (id prefix, partition)."""
    prefix, partition = id_table[int(key >> np.uint64(32))]
    return make_id(prefix, int(key & np.uint64(0xFFFFFFFF)), partition)


class DedupStage(GlobalStage):
    name = "dedup"

    def run(self, ex, upstream: dict[str, Counts]) -> dict[str, Counts]:
        cfg = ex.cfg.dedup
        tag = signature_tag(cfg)
        sig_dir = f"dedup/signatures/{tag}"
        out, progress = ex.out, ex.progress
        docs = [ex.partition(self.name, sf).docs for sf in ex.files]
        index = {sf: i for i, sf in enumerate(ex.files)}  # a file's pieces share its rel

        def sig_task(sf: SourceFile) -> dict:
            path = docs[index[sf]]
            n = write_signatures(path, out / sig_dir / sf.source / f"{sf.part_name}.parquet", cfg)
            progress.add.remote(sig_dir, n, documents_file(path).stat().st_size)
            return {"source": sf.source, "docs": n}

        # signatures depend on the documents (everything upstream) and their own parameters only
        upstream_hash = ex.config_hash(ex.pipeline.upstream_of(self.name)[-1].name)
        ex.map_partitions(sig_dir, f"{upstream_hash}-{tag}", sig_task, label=f"{ex.label or self.name} signatures",
                          sizes=ex.input_sizes(self.name, ex.files))
        apply_hash = ex.config_hash(self.name)
        summary_path = out / "dedup" / "summary.json"
        cached = [ex.done(self.name, apply_hash, sf) for sf in ex.files]
        if summary_path.exists() and read_json(summary_path).get("config_hash") == apply_hash \
                and all(c is not None for c in cached):
            summary, stats = read_json(summary_path)["summary"], cached
        else:
            summary, stats = cluster_and_apply(ex, sig_dir, docs, apply_hash)
            write_json(summary_path, {"config_hash": apply_hash, "summary": summary})
        ex.details[self.name] = summary
        totals = by_source([Counts.from_partition_dict(s) for s in stats], upstream)
        for name, figures in summary["per_source"].items():
            if name in totals:
                totals[name].figures.update(figures)
        return totals


def _log(ex, msg: str) -> None:
    if not ex.quiet:
        print(f"[{ex.label or 'dedup'}] {msg}", file=sys.stderr, flush=True)


def cluster_and_apply(ex, sig_dir: str, docs: list[Path], apply_hash: str) -> tuple[dict, list[dict]]:
    cfg = ex.cfg.dedup
    parts = cfg.partitions
    options = ex.options("dedup")
    files = ex.files
    out = ex.out
    rank = {s: i for i, s in enumerate(cfg.source_rank)}
    file_rank = np.array([rank.get(sf.source, len(rank)) for sf in files], np.int64)
    source_index = {s: i for i, s in enumerate(SOURCE_NAMES)}
    file_source = np.array([source_index[sf.source] for sf in files], np.int64)
    id_parts = ray.put([(sf.id_prefix, sf.partition) for sf in files])

    # -- buckets: map over groups of signature files (objects: groups x partitions), reduce into star edges
    sig_paths = [out / sig_dir / sf.source / f"{sf.part_name}.parquet" for sf in files]
    map_groups = ex.task_groups("dedup", [input_bytes(p) for p in sig_paths])

    @ray.remote(**options, num_returns=parts + 1)
    def bucket_map(group: list[int]):
        per_part: list[list[np.ndarray]] = [[] for _ in range(parts)]
        for i in group:
            rows, sigs = read_signatures(sig_paths[i])
            for p, piece in enumerate(bucket_pairs(sigs[:, : cfg.bands * cfg.rows], doc_keys(i, rows), cfg.bands,
                                                   cfg.rows, cfg.seed, parts)):
                per_part[p].append(piece)
        pieces = [np.concatenate(ps) for ps in per_part]
        return (*pieces, sum(p.nbytes for p in pieces))

    @ray.remote(**options, num_returns=2)
    def bucket_reduce(*pieces):
        u, v, stats = bucket_edges(*pieces)
        return (u, v), stats

    maps = [bucket_map.remote(g) for g in map_groups]
    ex.tasks["dedup/bucket_map"] = len(maps)  # each returns partitions + 1 objects
    reduces = [bucket_reduce.remote(*[m[p] for m in maps]) for p in range(parts)]
    edge_refs = [r[0] for r in reduces]
    step = ex.label or "dedup"
    bucket_stats = ex.wait([r[1] for r in reduces], "dedup", label=f"{step} buckets")
    shuffle_bytes = sum(ray.get([m[parts] for m in maps]))
    summary = {"signature_tag": signature_tag(cfg), "bands": cfg.bands, "rows": cfg.rows, "mode": cfg.mode,
               "partitions": parts, "band_pairs": sum(s["pairs"] for s in bucket_stats),
               "buckets_ge2": sum(s["buckets_ge2"] for s in bucket_stats),
               "largest_bucket": max([s["largest_bucket"] for s in bucket_stats], default=0)}
    _log(ex, f"{summary['band_pairs']:,} band keys, {summary['buckets_ge2']:,} buckets with 2+ docs")

    # -- optional exact verification of candidate edges
    if cfg.verify_threshold is not None:
        @ray.remote(**options, num_returns=2)
        def verify(edges):
            return verify_edges(edges, docs, cfg)

        outs = [verify.remote(ref) for ref in edge_refs]
        edge_refs = [o[0] for o in outs]
        checks = ray.get([o[1] for o in outs])
        summary["verify"] = {"threshold": cfg.verify_threshold, "checked": sum(c[0] for c in checks),
                             "rejected": sum(c[1] for c in checks)}
    summary["candidate_edges"] = sum(s["edges"] for s in bucket_stats) - summary.get("verify", {}).get("rejected", 0)
    _log(ex, f"{summary['candidate_edges']:,} candidate edges")

    # -- connected components
    cc = {}
    members = connected_components(edge_refs, parts, options, stats=cc)
    summary["components_rounds"] = cc["rounds"]
    summary["shuffle_bytes"] = shuffle_bytes + cc["shuffle_bytes"]
    _log(ex, f"components converged in {cc['rounds']} rounds")

    # -- resolve: members grouped by cluster root, decisions split by file group
    # apply groups: the task groups of the documents (at most `parts`; more are dealt round-robin), so
    # resolve returns partitions x groups objects, not partitions x files
    file_groups = ex.task_groups("dedup", ex.input_sizes("dedup", files))
    groups = max(1, min(parts, len(file_groups)))
    apply_of = np.zeros(len(files), np.int64)
    for k, g in enumerate(file_groups):
        apply_of[g] = k % groups
    ex.tasks["dedup/apply"] = groups

    @ray.remote(**options, num_returns=parts)
    def by_root(pair):
        node, root = pair
        out = split_by(root, node, parts)
        return out if parts > 1 else out[0]

    @ray.remote(**options, num_returns=groups + 1)
    def resolve_part(id_table, *pieces):
        pairs = np.concatenate([p for p in pieces]) if pieces else np.zeros((0, 2), np.uint64)
        root, doc = pairs[:, 0], pairs[:, 1]

        d, r, reason, _ = resolve(root, doc, file_rank, cfg.mode,
                                  lambda keys: [key_to_nemo_id(k, id_table) for k in keys])
        stats = cluster_stats(root, doc, file_source, len(SOURCE_NAMES))
        group = apply_of[(d >> np.uint64(32)).astype(np.int64)]
        rows = np.stack([d, r, reason.astype(np.uint64)], axis=1)
        out = [rows[group == g] for g in range(groups)]
        return (*out, stats)

    shuffled = [by_root.remote(m) for m in members]
    pieces_for = [[s[p] for s in shuffled] if parts > 1 else [s for s in shuffled] for p in range(parts)]
    resolved = [resolve_part.remote(id_parts, *pieces_for[p]) for p in range(parts)]
    cstats = ex.wait([r[groups] for r in resolved], "dedup", label=f"{step} resolve")
    summary.update(_merge_cluster_stats(cstats))

    # -- apply: each group of input files gets its decisions and writes outputs
    def apply_group(g: int, id_table, *pieces):
        rows = np.concatenate(pieces) if pieces else np.zeros((0, 3), np.uint64)
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        results = []
        for i in np.flatnonzero(apply_of == g).tolist():
            sf = files[i]
            lo, hi = np.searchsorted(rows[:, 0], [np.uint64(i) << np.uint64(32), np.uint64(i + 1) << np.uint64(32)])
            t0 = time.monotonic()
            part = Partition(sf, out, docs[i], "dedup")
            stats = write_output(part, apply_decisions(part, rows[lo:hi], id_table))
            write_marker(out, "dedup", apply_hash, sf, stats, time.monotonic() - t0)
            results.append((i, stats))
        return results

    apply = ex.remote(apply_group, "dedup")
    applies = [apply.remote(g, id_parts, *[r[g] for r in resolved]) for g in range(groups)]
    applied = ex.wait(applies, "dedup", label=f"{step} apply")
    stats = [s for _, s in sorted(x for group in applied for x in group)]
    return summary, stats


def _merge_cluster_stats(parts: list[dict]) -> dict:
    sizes: dict[int, int] = {}
    n_src: dict[int, int] = {}
    per_source = [[0, 0] for _ in SOURCE_NAMES]
    for p in parts:
        for k, v in p["sizes"].items():
            sizes[k] = sizes.get(k, 0) + v
        for k, v in p["sources_per_cluster"].items():
            n_src[k] = n_src.get(k, 0) + v
        for s, (count, largest) in enumerate(p["per_source"]):
            per_source[s][0] += count
            per_source[s][1] = max(per_source[s][1], largest)
    return {"clusters": sum(p["clusters"] for p in parts),
            "cluster_sizes": {str(k): sizes[k] for k in sorted(sizes)},
            "sources_per_cluster": {str(k): n_src[k] for k in sorted(n_src)},
            "per_source": {s: {"clusters": per_source[i][0], "largest_cluster": per_source[i][1]}
                           for i, s in enumerate(SOURCE_NAMES)}}


def apply_decisions(part: Partition, rows: np.ndarray, id_table) -> StageOutput:
    """One partition's surviving documents and its decisions (a side table); rows are
    (document key, cluster root key, reason code) of its clustered documents."""
    sf = part.file
    table = read_documents(part.docs)
    src_row = table.column("src_row").to_numpy()
    dec_rows = (rows[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    reasons = rows[:, 2].astype(np.int64)
    dropped = dec_rows[~KEEP[reasons]]
    kept = table.filter(pa.array(~np.isin(src_row, dropped)))
    tables = {}
    if len(rows):
        roots = rows[:, 1]
        cluster_ids = [key_to_nemo_id(r, id_table) for r in roots]
        order = np.argsort(dec_rows, kind="stable")
        tables[part.table_path("dedup/decisions")] = pa.table({
            "nemo_id": [make_id(sf.id_prefix, int(r), sf.partition) for r in dec_rows[order]],
            "source": [sf.source] * len(rows), "src_file": [sf.rel] * len(rows),
            "src_row": dec_rows[order], "cluster_id": [cluster_ids[j] for j in order],
            "keep": KEEP[reasons[order]], "reason": [REASONS[k] for k in reasons[order]]}, schema=DECISION_SCHEMA)
    removed = {}
    for code in np.unique(reasons[~KEEP[reasons]]):
        removed[REASONS[code]] = int((reasons == code).sum())
    chars = int(pa.compute.sum(pa.compute.utf8_length(kept.column("text"))).as_py() or 0)
    return StageOutput(kept, part.counts(read=table.num_rows, out=kept.num_rows, removed=removed, chars_out=chars),
                       tables, schema=DOC_SCHEMA)


def verify_edges(edges, docs: list[Path], cfg: DedupConfig) -> tuple[tuple[np.ndarray, np.ndarray], tuple[int, int]]:
    """Keep candidate edges whose exact n-gram Jaccard reaches the threshold; `docs[i]` is file i's documents."""
    u, v = edges
    needed: dict[int, set[int]] = {}
    for key in np.concatenate([u, v]):
        needed.setdefault(int(key >> np.uint64(32)), set()).add(int(key & np.uint64(0xFFFFFFFF)))
    shingles: dict[int, np.ndarray] = {}
    for fi, rows in sorted(needed.items()):
        table = read_documents(docs[fi], ["text", "src_row"])
        for text, row in zip(table.column("text").to_pylist(), table.column("src_row").to_pylist()):
            if row in rows:
                shingles[(fi << 32) | row] = shingle_set(text, cfg)
    keep = np.array([jaccard(shingles[int(a)], shingles[int(b)]) >= cfg.verify_threshold
                     for a, b in zip(u, v)], bool)
    return (u[keep], v[keep]), (int(len(u)), int((~keep).sum()))
