"""The tokenize stage: Mistral v0.1 ids of every kept document, written straight into Megatron shards.

One pass over the text and no token intermediate: the shards are planned before any document is
read, and each shard's task tokenizes its documents into the shard's files.

Plan. Per component, consecutive input partitions (in file order) are grouped into shards of about
`shards.shard_tokens` tokens, cut at partition boundaries. Tokens are not known before tokenizing,
so the plan counts characters: each partition's `chars_out` (from the completion marker of the stage
that last wrote its documents) against `shard_tokens x shards.chars_per_token` (Mistral v0.1 on
English web text: 4.02-4.15 characters per token on the fixtures' four sources; the default 4.0).
The plan depends on those counts and the file order alone, so the same input gives the same shards
whatever the worker count or task grouping.

One Ray task per planned shard k reads its partitions' documents in order, tokenizes them (ids + EOS,
optional BOS; encoder.py), decides each document's split and anneal membership, and streams them
into (`.bin` + `.idx` each; a role without a document is not written, Megatron cannot map it):
  shards/<component>/train/part_k    the train documents (the anneal set's too)
  shards/<component>/anneal/part_k   the train documents of the anneal set
  shards/<component>/val/part_k      the validation documents
Split: a document is `val` when a hash of its split key falls under `shards.validation_fraction`.
The key is its dedup cluster root when it is in a cluster, else its text, so identical texts and
near-duplicates always land on the same side.

Markers: one per partition, `tokenize/_done/<source>__<part>.json`, written once its shard is
committed, with the report's figures (tokens, tokens_val, tokens_anneal, docs_val, docs_anneal) and
the shard it went into (`shard`: the shards stage lists the shards from it). A shard is redone whole
when any of its partitions lacks a marker with this config (a task killed mid-shard leaves none).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.core.counts import Counts, by_source
from pipelines.core.schema import read_docs
from pipelines.core.sources import COMPONENTS, ROLES
from pipelines.core.stage import GlobalStage, Partition
from pipelines.tokens.encoder import cached_encoder
from pipelines.tokens.indexed import IndexedWriter


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


def anneal_mask(table: pa.Table, source: str, cfg) -> np.ndarray:
    n = table.num_rows
    if source not in cfg.anneal_components:
        return np.zeros(n, bool)
    if source == "fwe":
        scores = table.column("int_score").to_numpy(zero_copy_only=False)
        return np.nan_to_num(scores.astype(float), nan=-1) >= cfg.anneal_fwe_min_int_score
    prob = table.column("quality_prob").to_numpy(zero_copy_only=False).astype(float)
    return np.nan_to_num(prob, nan=-1) >= cfg.anneal_min_quality_prob


def plan_shards(sizes: list[float], target: float) -> list[list[int]]:
    """Consecutive groups of partitions of about `target` each (a group closes once it reaches it)."""
    groups, current, size = [], [], 0.0
    for i, n in enumerate(sizes):
        current.append(i)
        size += n
        if size >= target:
            groups.append(current)
            current, size = [], 0.0
    if current:
        groups.append(current)
    return groups


def shard_prefix(out: Path, component: str, role: str, k: int) -> Path:
    return out / "shards" / component / role / f"part_{k:05d}"


def write_shards(prefixes: dict[str, Path], parts: list[Partition], tcfg, scfg) -> list[tuple[dict, float]]:
    """Tokenize `parts` in order into one shard per role (`prefixes`: role -> prefix, ROLES); returns
    each partition's (counts as marker stats, seconds). Only one partition's documents and ids are
    in memory at a time: the shards stream to disk (IndexedWriter)."""
    writers = {role: IndexedWriter(prefixes[role]) for role in ROLES}
    encoder = cached_encoder(tcfg.cache_units)
    done = []
    for part in parts:
        t0 = time.monotonic()
        table = read_docs(part.docs, ["nemo_id", "text", "int_score", "quality_prob"])
        texts = table.column("text").to_pylist()
        ids, offsets = encoder.encode_flat(texts, tcfg.add_bos, tcfg.append_eos)
        ids = ids.astype(np.uint16)  # Mistral's 32,000 ids fit; Megatron's dtype code 8
        val = np.array([is_validation(k, scfg.validation_fraction) for k in split_keys(
            table.column("nemo_id").to_pylist(), texts, part.table_path("dedup/decisions"))], bool)
        anneal = anneal_mask(table, part.source, scfg) & ~val
        lengths = np.diff(offsets)
        for role, docs in (("train", ~val), ("anneal", anneal), ("val", val)):
            writers[role].write(ids[np.repeat(docs, lengths)], lengths[docs])
        chars = int(pc.sum(pc.utf8_length(table.column("text"))).as_py() or 0)
        counts = part.counts(read=table.num_rows, out=table.num_rows, chars_out=chars, figures={
            "tokens": int(lengths.sum()), "tokens_val": int(lengths[val].sum()),
            "tokens_anneal": int(lengths[anneal].sum()), "docs_val": int(val.sum()), "docs_anneal": int(anneal.sum())})
        part.advance(table.num_rows, part.docs_bytes(), final=True)
        done.append((counts.partition_dict(), time.monotonic() - t0))
    for writer in writers.values():
        writer.close()
    return done


class TokenizeStage(GlobalStage):
    """Plan the shards, then one task per shard tokenizes its partitions into it (module docstring)."""
    name = "tokenize"
    needs = ("shards",)  # the plan, the split and the anneal set follow the shards section
    writes_docs = False  # its products are shards: later stages read documents from where they were

    def run(self, ex, upstream: dict[str, Counts]) -> dict[str, Counts]:
        cfg, out, progress, name = ex.cfg, ex.out, ex.progress, self.name
        files = ex.files
        folders = {s: ex.docs_folder(name, s) for s in {sf.source for sf in files}}
        target = cfg.shards.shard_tokens * cfg.shards.chars_per_token
        commits, shard_of = [], {}
        for source, component in COMPONENTS.items():
            mine = [i for i, sf in enumerate(files) if sf.source == source]
            groups = plan_shards([ex.docs_chars(name, files[i]) for i in mine], target)
            for k, group in enumerate(groups):
                commits.append([mine[j] for j in group])
                for j in group:
                    shard_of[files[mine[j]]] = (component, k)  # by partition: pieces share a rel
            if mine:
                remove_unplanned(out / "shards" / component, len(groups))

        def task(sfs: list) -> list[tuple[dict, float]]:  # ships the config and the plan, not the executor
            component, k = shard_of[sfs[0]]
            parts = [Partition.at(sf, out, folders[sf.source], name, progress) for sf in sfs]
            done = write_shards({role: shard_prefix(out, component, role, k) for role in ROLES}, parts,
                                cfg.tokenize, cfg.shards)
            return [({**stats, "shard": f"part_{k:05d}"}, seconds) for stats, seconds in done]

        stats = ex.map_partitions(name, ex.config_hash(name), task, files, commits=commits,
                                  sizes=ex.input_sizes(name, files))
        counts = [Counts.from_partition_dict(s) for s in stats]
        ex.partition_counts[name] = counts  # the shards stage lists the shards from their `shard`
        totals = by_source(counts, [s for s in upstream if s in folders])
        for source, c in upstream.items():
            totals.setdefault(source, Counts.passthrough(source, c))
        return dict(sorted(totals.items()))


def remove_unplanned(folder: Path, shards: int) -> None:
    """Delete a component's shards numbered past the plan (left by an earlier attempt whose input
    planned more), so the folder holds exactly what the report lists."""
    for path in folder.glob("*/part_*.*"):
        if path.suffix in (".bin", ".idx") and int(path.stem.removeprefix("part_")) >= shards:
            path.unlink()
