"""The dedup stage: signatures -> buckets -> edges (-> verification) -> components -> decisions.

  1. signatures   one task per input partition; cached in dedup/signatures/<tag>/ and reused by
                  any later run whose shingling and hash parameters are the same (bands/rows may differ)
  2. buckets      map (one task per group of signature files): (band key, doc) pairs hashed into the
                  P = `partitions` partitions, one shuffle file per task; reduce (one task per
                  partition): star edges per bucket, verified if asked (3), written both ways for 4
  3. verify       optional, inside the bucket reduce: exact char/word n-gram Jaccard of every candidate
                  edge, edges below `verify_threshold` dropped (the paper did not verify)
  4. components   alternating large-star / small-star (dedup/components.py) on C partitions, C the
                  smallest divisor of P holding `graph_partition_mb` of candidate edges each; then the
                  members, (root, node) split by root
  5. resolve      one task per members partition: source-rank resolution (dedup/resolve.py), decisions
                  split by apply group
  6. apply        one task per group of input files (grouping.py) writes dedup/decisions/<source>__<part>.parquet
                  and the surviving documents dedup/<source>/<part>.parquet

Only steps 1 and 6 touch documents; 2-5 move 8-byte keys through shuffle files under
dedup/shuffle/<step>/ (dedup/shuffle.py: one file per task and step, read by partition ranges), so
a step of M map tasks into P partitions costs M + P small Ray objects, each task holding one
partition's share. A step's folder is deleted once its readers are done, and dedup/shuffle/ is
cleared when clustering starts (it is always recomputed as a whole). Ray tasks and objects per step
go to manifest.json (`attempts[].tasks`, `attempts[].objects`). Cost for N docs, b bands, E candidate
edges: signatures O(text); shuffle 16·N·b bytes; components O(E) bytes per round over a few rounds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from dedup.components import connected_components, graph_partitions, write_edges
from dedup.lsh import bucket_edges, bucket_pairs, doc_keys, write_buckets
from dedup.minhash import jaccard, shingle_set
from dedup.resolve import KEEP, REASONS, cluster_stats, resolve
from dedup.shuffle import Step, clear, hash_mod
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


def member_rows(root: np.ndarray, doc: np.ndarray, parts: int) -> int:
    """Rows the members step adds to dedup/summary.json's `shuffle_bytes` (16 bytes each). The figure
    keeps the definition it had with the object-store shuffle, so that a summary stays comparable (and
    a run's outputs byte-identical) across versions: one (leaf, root) row per leaf, plus one
    (root, root) row per cluster and `hash_mod` partition of `parts` holding some of its leaves.
    `root`, `doc`: whole clusters (a resolve partition)."""
    leaf = doc != root
    held = np.unique(np.stack([root[leaf], hash_mod(doc[leaf], parts)], axis=1), axis=0)
    return int(leaf.sum()) + len(held)


def _record(ex, step: str, tasks: int, objects: int | None = None) -> None:
    ex.tasks[f"dedup/{step}"] = ex.tasks.get(f"dedup/{step}", 0) + tasks
    ex.objects[f"dedup/{step}"] = ex.objects.get(f"dedup/{step}", 0) + (tasks if objects is None else objects)


def cluster_and_apply(ex, sig_dir: str, docs: list[Path], apply_hash: str) -> tuple[dict, list[dict]]:
    cfg = ex.cfg.dedup
    parts = cfg.partitions
    options = ex.options("dedup")
    files = ex.files
    out = ex.out
    # document keys count input files, not partitions (a bundle is several): partition i holds the
    # files first[i]:first[i + 1] of `inputs`
    inputs = InputFiles(files)
    rank = {s: i for i, s in enumerate(cfg.source_rank)}
    file_rank = np.array([rank.get(sf.source, len(rank)) for sf in inputs.flat], np.int64)
    source_index = {s: i for i, s in enumerate(SOURCE_NAMES)}
    file_source = np.array([source_index[sf.source] for sf in inputs.flat], np.int64)
    id_parts = ray.put([(sf.id_prefix, sf.partition) for sf in inputs.flat])
    # every step from here on is recomputed as a whole (DedupStage.run): an earlier attempt's files are stale
    shuffle_root = out / "dedup" / "shuffle"
    clear(shuffle_root)

    # -- buckets: map over groups of signature files (one shuffle file each), reduce into star edges,
    # verified if asked, written both ways for the first large-star step
    sig_paths = [out / sig_dir / sf.source / f"{sf.part_name}.parquet" for sf in files]
    map_groups = ex.task_groups("dedup", [input_bytes(p) for p in sig_paths])
    buckets = Step(str(shuffle_root / "buckets"), len(map_groups), parts)
    edges = Step(str(shuffle_root / "edges"), parts, parts)

    @ray.remote(**options)
    def bucket_map(i: int, group: list[int]) -> int:
        pairs = []
        for f in group:
            src_file, rows, sigs = read_signatures(sig_paths[f])
            pairs.append(bucket_pairs(sigs[:, : cfg.bands * cfg.rows], inputs.keys(f, src_file, rows), cfg.bands,
                                      cfg.rows, cfg.seed))
        return write_buckets(buckets, i, np.concatenate(pairs))

    @ray.remote(**options)
    def bucket_reduce(p: int) -> dict:
        u, v, stats = bucket_edges(buckets.read(p))
        if cfg.verify_threshold is not None:
            (u, v), stats["verify"] = verify_edges((u, v), docs, inputs, cfg)
        write_edges(edges, p, u, v)
        return stats

    step = ex.label or "dedup"
    shuffle_bytes = sum(ex.wait([bucket_map.remote(i, g) for i, g in enumerate(map_groups)], "dedup",
                                label=f"{step} bucket map"))
    _record(ex, "bucket_map", len(map_groups))
    bucket_stats = ex.wait([bucket_reduce.remote(p) for p in range(parts)], "dedup", label=f"{step} buckets")
    _record(ex, "buckets", parts)
    buckets.remove()
    summary = {"signature_tag": signature_tag(cfg), "bands": cfg.bands, "rows": cfg.rows, "mode": cfg.mode,
               "partitions": parts, "band_pairs": sum(s["pairs"] for s in bucket_stats),
               "buckets_ge2": sum(s["buckets_ge2"] for s in bucket_stats),
               "largest_bucket": max([s["largest_bucket"] for s in bucket_stats], default=0)}
    _log(ex, f"{summary['band_pairs']:,} band keys, {summary['buckets_ge2']:,} buckets with 2+ docs")
    if cfg.verify_threshold is not None:
        summary["verify"] = {"threshold": cfg.verify_threshold,
                             "checked": sum(s["verify"][0] for s in bucket_stats),
                             "rejected": sum(s["verify"][1] for s in bucket_stats)}
    summary["candidate_edges"] = sum(s["edges"] for s in bucket_stats) - summary.get("verify", {}).get("rejected", 0)
    _log(ex, f"{summary['candidate_edges']:,} candidate edges")

    # -- connected components, on as many partitions as the graph needs (never more than `parts`)
    graph_parts = graph_partitions(16 * summary["candidate_edges"], cfg.graph_partition_mb, parts)
    cc = {}
    members = connected_components(edges, graph_parts, shuffle_root, graph_parts, options, stats=cc)
    for s in cc["steps"]:
        _record(ex, s["step"].split("-")[0], s["tasks"], s["objects"])
    summary["components_rounds"] = cc["rounds"]
    _log(ex, f"components converged in {cc['rounds']} rounds on {graph_parts} partitions")

    # -- resolve: members grouped by cluster root; decisions split by apply group, the task groups of
    # the documents (grouping.py)
    file_groups = ex.task_groups("dedup", ex.input_sizes("dedup", files))
    apply_of = np.zeros(len(inputs.flat), np.int64)  # by input file
    for k, g in enumerate(file_groups):
        for i in g:
            apply_of[inputs.first[i]: inputs.first[i + 1]] = k
    resolved = Step(str(shuffle_root / "resolved"), graph_parts, len(file_groups), width=3)

    @ray.remote(**options)
    def resolve_part(q: int, id_table) -> dict:
        pairs = members.read(q)
        root, doc = pairs[:, 0], pairs[:, 1]
        d, r, reason, _ = resolve(root, doc, file_rank, cfg.mode,
                                  lambda keys: [key_to_nemo_id(k, id_table) for k in keys])
        stats = cluster_stats(root, doc, file_source, len(SOURCE_NAMES))
        stats["member_rows"] = member_rows(root, doc, parts)
        rows = np.stack([d, r, reason.astype(np.uint64)], axis=1)
        resolved.write(q, rows, apply_of[(d >> np.uint64(32)).astype(np.int64)])
        return stats

    cstats = ex.wait([resolve_part.remote(q, id_parts) for q in range(graph_parts)], "dedup",
                     label=f"{step} resolve")
    _record(ex, "resolve", graph_parts, graph_parts + 1)  # + the id table
    members.remove()
    summary["shuffle_bytes"] = shuffle_bytes + cc["shuffle_bytes"] + 16 * sum(c["member_rows"] for c in cstats)
    summary.update(_merge_cluster_stats(cstats))

    # -- apply: each group of input files gets its decisions and writes outputs
    def apply_group(g: int, id_table):
        rows = resolved.read(g)
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        results = []
        for i in file_groups[g]:
            sf = files[i]
            lo, hi = np.searchsorted(rows[:, 0], [np.uint64(inputs.first[i]) << np.uint64(32),
                                                  np.uint64(inputs.first[i + 1]) << np.uint64(32)])
            t0 = time.monotonic()
            part = Partition(sf, out, docs[i], "dedup")
            stats = write_output(part, apply_decisions(part, rows[lo:hi], id_table, inputs.first[i]))
            write_marker(out, "dedup", apply_hash, sf, stats, time.monotonic() - t0)
            results.append((i, stats))
        return results

    apply = ex.remote(apply_group, "dedup")
    applied = ex.wait([apply.remote(g, id_parts) for g in range(len(file_groups))], "dedup", label=f"{step} apply")
    _record(ex, "apply", len(file_groups))
    clear(shuffle_root)
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


class InputFiles:
    """The run's input files behind its partitions (a bundle is several, discover.py): `flat[j]` is
    input file j (the file index of document keys), partition i holds files `first[i]:first[i + 1]`."""

    def __init__(self, partitions: list[SourceFile]):
        self.partitions = partitions
        self.flat = [f for sf in partitions for f in sf.files]
        self.first = np.cumsum([0] + [len(sf.files) for sf in partitions]).tolist()

    def keys(self, i: int, src_file, src_row: np.ndarray) -> np.ndarray:
        """Document keys of partition i's documents, from their `src_file` and `src_row` columns."""
        return doc_keys(self.first[i] + file_ordinals(self.partitions[i], src_file), src_row)


def file_ordinals(sf: SourceFile, src_file) -> np.ndarray:
    """Index of each document's `src_file` among the partition's input files (0 for a lone file)."""
    if not sf.members:
        return np.zeros(len(src_file), np.int64)
    return pc.index_in(src_file, value_set=pa.array([f.rel for f in sf.files])).to_numpy(zero_copy_only=False)


def apply_decisions(part: Partition, rows: np.ndarray, id_table, first: int) -> StageOutput:
    """One partition's surviving documents and its decisions (a side table); rows are
    (document key, cluster root key, reason code) of its clustered documents, sorted by key; `first`:
    the file index of the partition's first input file."""
    sf = part.file
    table = read_documents(part.docs)
    keys = doc_keys(first + file_ordinals(sf, table.column("src_file")), table.column("src_row").to_numpy())
    reasons = rows[:, 2].astype(np.int64)
    kept = table.filter(pa.array(~np.isin(keys, rows[~KEEP[reasons], 0])))
    tables = {}
    if len(rows):
        files = [f.rel for f in sf.files]
        tables[part.table_path("dedup/decisions")] = pa.table({
            "nemo_id": [key_to_nemo_id(k, id_table) for k in rows[:, 0]],
            "source": [sf.source] * len(rows),
            "src_file": [files[int(k >> np.uint64(32)) - first] for k in rows[:, 0]],
            "src_row": (rows[:, 0] & np.uint64(0xFFFFFFFF)).astype(np.int64),
            "cluster_id": [key_to_nemo_id(r, id_table) for r in rows[:, 1]],
            "keep": KEEP[reasons], "reason": [REASONS[k] for k in reasons]}, schema=DECISION_SCHEMA)
    removed = {}
    for code in np.unique(reasons[~KEEP[reasons]]):
        removed[REASONS[code]] = int((reasons == code).sum())
    chars = int(pa.compute.sum(pa.compute.utf8_length(kept.column("text"))).as_py() or 0)
    return StageOutput(kept, part.counts(read=table.num_rows, out=kept.num_rows, removed=removed, chars_out=chars),
                       tables, schema=DOC_SCHEMA)


def verify_edges(edges, docs: list[Path], inputs: InputFiles,
                 cfg: DedupConfig) -> tuple[tuple[np.ndarray, np.ndarray], tuple[int, int]]:
    """Keep candidate edges whose exact n-gram Jaccard reaches the threshold; `docs[i]` is partition
    i's documents."""
    u, v = edges
    needed = set(np.concatenate([u, v]).tolist())
    owner = np.searchsorted(inputs.first, sorted({k >> 32 for k in needed}), side="right") - 1
    shingles: dict[int, np.ndarray] = {}
    for i in sorted(set(owner.tolist())):
        table = read_documents(docs[i], ["text", "src_file", "src_row"])
        keys = inputs.keys(i, table.column("src_file"), table.column("src_row").to_numpy()).tolist()
        for text, key in zip(table.column("text").to_pylist(), keys):
            if key in needed:
                shingles[key] = shingle_set(text, cfg)
    keep = np.array([jaccard(shingles[int(a)], shingles[int(b)]) >= cfg.verify_threshold
                     for a, b in zip(u, v)], bool)
    return (u[keep], v[keep]), (int(len(u)), int((~keep).sum()))
