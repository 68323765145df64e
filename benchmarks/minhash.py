"""MinHash signatures and end-to-end dedup: ours vs datasketch, datatrove and rensa.

Corpus: >= 100 MB of real text built at run time from /usr/share/doc (benchmarks.common.doc_corpus).
Parameters as the recipe: character 25-grams, 128 permutations, 32-bit, seed 10. datatrove only
shingles words (its `MinhashDedupSignature`), so it runs with word 5-grams, and ours is measured on
the same word 5-grams too. Slow peers run on a prefix of the corpus (the size is recorded).

Then the dedup stage end to end (signatures -> decisions, on Ray with 2 CPUs) at 1x and 4x input,
with the wall time and the peak RSS of the Ray workers and the driver.

  python -m benchmarks.minhash          # writes benchmarks/results/minhash.json
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from benchmarks.common import REPO, doc_corpus, peak_rss_mb, ray_workers_rss_mb, take_mb, write_results
from dedup.minhash import signatures
from pipelines.core.config import DedupConfig, load_config

CORPUS_MB = 110
SLOW_PEER_MB = 6  # datasketch and datatrove take minutes per 100 MB on this machine


def mb(texts: list[str]) -> float:
    return sum(len(t.encode()) for t in texts) / 1e6


def _rate(texts, fn) -> dict:
    t0 = time.perf_counter()
    fn(texts)
    seconds = time.perf_counter() - t0
    return {"mb": round(mb(texts), 1), "seconds": round(seconds, 2), "mb_per_s": round(mb(texts) / seconds, 2)}


def ours(cfg):
    arrow = None

    def run(texts):
        nonlocal arrow
        arrow = pa.array(texts, pa.string())
        signatures(arrow, cfg)
    signatures(pa.array(["warm up the compiled kernel" * 3]), cfg)
    return run


def rensa_char(texts):
    import rensa
    for t in texts:
        m = rensa.RMinHash(num_perm=128, seed=10)
        m.update([t[i:i + 25] for i in range(max(1, len(t) - 24))])
        m.digest()


def datasketch_char(texts):
    from datasketch import MinHash
    for t in texts:
        m = MinHash(num_perm=128, seed=10)
        m.update_batch([t[i:i + 25].encode() for i in range(max(1, len(t) - 24))])


def datatrove_word5(texts):
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig
    step = MinhashDedupSignature(tempfile.mkdtemp(), config=MinhashConfig(
        n_grams=5, num_buckets=8, hashes_per_bucket=16, seed=10, hash_config=HashConfig(precision=32)))
    for t in texts:
        shingles = step.get_shingles(t)
        if len(shingles):  # as its run(): documents shorter than n words get no signature
            step.get_signature(shingles)


def bench_signatures(corpus: list[str]) -> dict:
    slow, _ = take_mb(corpus, SLOW_PEER_MB)
    char, word = DedupConfig(), DedupConfig(shingle="word", ngram=5)
    res = {
        "char25": {"ours": _rate(corpus, ours(char)), "rensa": _rate(corpus, rensa_char),
                   "datasketch": _rate(slow, datasketch_char)},
        "word5": {"ours": _rate(corpus, ours(word)), "datatrove": _rate(slow, datatrove_word5)},
    }
    res["char25"]["speedup_vs_rensa"] = round(res["char25"]["ours"]["mb_per_s"] / res["char25"]["rensa"]["mb_per_s"], 1)
    res["char25"]["speedup_vs_datasketch"] = round(
        res["char25"]["ours"]["mb_per_s"] / res["char25"]["datasketch"]["mb_per_s"], 1)
    res["word5"]["speedup_vs_datatrove"] = round(
        res["word5"]["ours"]["mb_per_s"] / res["word5"]["datatrove"]["mb_per_s"], 1)
    res["char25_ours_vs_datatrove_word5"] = round(
        res["char25"]["ours"]["mb_per_s"] / res["word5"]["datatrove"]["mb_per_s"], 1)
    return res


# ---------------------------------------------------------------- end to end

DOCS_PER_FILE = 250


def write_sources(docs: list[str], root: Path) -> None:
    """The corpus as the four sources' native files, one file per DOCS_PER_FILE docs, round robin."""
    for f, start in enumerate(range(0, len(docs), DOCS_PER_FILE)):
        chunk = docs[start: start + DOCS_PER_FILE]
        kind = f % 4
        if kind == 0:
            path = root / "fineweb-edu" / "data" / "CC-MAIN-2024-10" / f"train-{f:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"text": chunk, "id": [f"<urn:{f}:{i}>" for i in range(len(chunk))],
                                     "int_score": [3] * len(chunk)}), path)
        elif kind == 1:
            path = root / "dclm" / "global-shard_01_of_10" / "local-shard_0_of_10" / f"shard_{f:08d}.jsonl.zst"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(orjson.dumps({"text": t, "url": "u"}) + b"\n"
                                                                          for t in chunk)))
        elif kind == 2:
            path = root / "zyda" / "zyda_refinedweb" / f"train-{f:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({"text": chunk, "source": ["refinedweb"] * len(chunk)}), path)
        else:
            path = root / "dolma-cc" / "cc_en_head" / f"cc_en_head-{f:04d}.json.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.compress(b"".join(orjson.dumps({"id": f"{f}-{i}", "text": t}) + b"\n"
                                                    for i, t in enumerate(chunk))))


def bench_end_to_end(corpus: list[str], scale: int, base_mb: float) -> dict:
    import ray

    from pipelines.core.run import run_pipeline
    from pipelines.pipeline import PIPELINE
    docs, n = take_mb(corpus, base_mb * scale)
    root = Path(tempfile.mkdtemp(prefix=f"zyda2-e2e-{scale}x-"))
    try:
        write_sources(docs, root / "in")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        cfg = load_config(REPO / "configs" / "local.yaml", [], input_dir=str(root / "in"), output_dir=str(root / "out"))
        report = run_pipeline(PIPELINE, cfg, quiet=True, only=["ingest", "heuristic_filter", "dedup"])
        manifest = json.loads((root / "out" / "manifest.json").read_text())
        workers = ray_workers_rss_mb()
        ray.shutdown()
        summary = report["details"]["dedup"]
        return {"scale": scale, "docs": len(docs), "text_mb": round(n / 1e6, 1),
                "dedup_seconds": manifest["stages"]["dedup"]["seconds"],
                "worker_peak_rss_mb": round(workers[0], 1) if workers else None,
                "driver_peak_rss_mb": round(peak_rss_mb(), 1), "removed": report["totals"]["removed"],
                "clusters": summary["clusters"], "candidate_edges": summary["candidate_edges"],
                "components_rounds": summary["components_rounds"], "shuffle_bytes": summary["shuffle_bytes"]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    corpus = doc_corpus(CORPUS_MB)
    sig = bench_signatures(corpus)
    print(json.dumps(sig, indent=1))
    one = bench_end_to_end(corpus, 1, CORPUS_MB / 4.4)
    four = bench_end_to_end(corpus, 4, CORPUS_MB / 4.4)
    e2e = {"1x": one, "4x": four, "time_ratio": round(four["dedup_seconds"] / one["dedup_seconds"], 2),
           "worker_rss_ratio": round(four["worker_peak_rss_mb"] / one["worker_peak_rss_mb"], 2)}
    print(json.dumps(e2e, indent=1))
    write_results("minhash", {"corpus_mb": round(mb(corpus), 1), "signatures_single_core": sig,
                              "dedup_end_to_end_2_cpus": e2e})


if __name__ == "__main__":
    main()
