"""Side by side with datatrove: the same corpus, the same cores, datatrove doing the same job vs `zyda2.py run`.

Corpus: `../shared/tools/make_scale_corpus.py` as `benchmarks/scale.py` writes it (`scale.make_corpus`):
`--mb` MB of text in `--files` files (default 250 MB, 64 files: 16 per source, the four native formats).

datatrove (its own classes only, as a datatrove user would write it), `--cpus` tasks on as many workers:
  1. signatures: JsonlReader (dclm *.jsonl.zst, dolma-cc *.json.gz) + ParquetReader (fineweb-edu, zyda
     parquet) -> MinhashDedupSignature
  2. buckets:    MinhashDedupBuckets (its tasks must be a multiple of the bands: 8 tasks on `--cpus` workers)
  3. cluster:    MinhashDedupCluster (one task: datatrove's union-find is single-process)
  4. filter + tokenize: the same readers -> MinhashDedupFilter -> DocumentTokenizer (Mistral v0.1 from a
     local tokenizer.json, EOS after every document, no shuffling)
MinHash as close to the recipe (configs/zyda2.yaml, ../shared/RECIPE.md) as datatrove allows: 8 bands x 16
rows = 128 hashes, 32-bit, seed 10; datatrove shingles words of its simplified text, not characters, so
5-word n-grams (its default) stand in for character 25-grams.

zyda2: `zyda2.py run configs/local.yaml` in its own process with `ray.num_cpus=--cpus`, exactly as
`benchmarks/scale.py` runs it (ingest, heuristics, cross-dedup, quality filter, tokenize, shards), with
the per-stage seconds of its manifest.json.

  python -m benchmarks.side_by_side [--mb 250] [--files 64] [--cpus 2] [--workdir DIR] [--name side_by_side]
      -> benchmarks/results/side_by_side.json
"""

from __future__ import annotations

import os

# two worker processes on two cores: one Rust thread each for `tokenizers` (as benchmarks/tokenize.py does);
# set before tokenizers is imported, inherited by datatrove's workers
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402

from benchmarks.common import DATA, REPO, write_results  # noqa: E402
from benchmarks.scale import TreeMemory, make_corpus, run  # noqa: E402
from benchmarks.tokenize import tokenizers_from_sentencepiece  # noqa: E402

BANDS, ROWS, SEED, WORD_NGRAMS = 8, 16, 10, 5
QUALITY_MODEL = REPO / "runs" / "models" / "quality-fasttext.ftz"  # configs/local.yaml's quality_filter.model


def readers(corpus: Path) -> list:
    """datatrove's readers for the four sources' native files, as make_scale_corpus lays them out."""
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    return [
        JsonlReader(str(corpus / "dclm"), glob_pattern="**/*.jsonl.zst"),
        ParquetReader(str(corpus / "fineweb-edu"), glob_pattern="**/*.parquet"),
        ParquetReader(str(corpus / "zyda"), glob_pattern="**/*.parquet"),
        JsonlReader(str(corpus / "dolma-cc"), glob_pattern="**/*.json.gz"),
    ]


def _blocks(stats) -> list[dict]:
    """Each pipeline block of one executor: its name (emoji dropped), seconds inside it summed over the
    executor's tasks (datatrove's own timing), and its counters."""
    out = []
    for block in stats.stats:
        name = " ".join("".join(c for c in block.name if c.isascii()).replace(" - ", " ").split())
        out.append({"block": name, "seconds_summed_over_tasks": round(block.time_stats.total, 2),
                    **{k: v.total for k, v in block.stats.items()}})
    return out


def _block(blocks: list[dict], word: str) -> dict:
    return next(b for b in blocks if word in b["block"])


def datatrove_side(corpus: Path, work: Path, cpus: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.utils.hashing import HashConfig

    tokenizer_json = work / "tokenizer" / "tokenizer.json"  # Mistral v0.1 as a `tokenizers` file, built offline
    tokenizer_json.parent.mkdir(parents=True, exist_ok=True)
    tokenizers_from_sentencepiece().save(str(tokenizer_json))
    config = MinhashConfig(n_grams=WORD_NGRAMS, num_buckets=BANDS, hashes_per_bucket=ROWS, seed=SEED,
                           hash_config=HashConfig(precision=32))
    steps = {
        "signatures": LocalPipelineExecutor(
            [*readers(corpus), MinhashDedupSignature(str(work / "signatures"), config=config)],
            tasks=cpus, workers=cpus, logging_dir=str(work / "logs" / "signatures")),
        "buckets": LocalPipelineExecutor(
            [MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"), config=config)],
            tasks=BANDS * max(1, cpus // BANDS), workers=cpus, logging_dir=str(work / "logs" / "buckets")),
        "cluster": LocalPipelineExecutor(
            [MinhashDedupCluster(str(work / "buckets"), str(work / "remove_ids"), config=config)],
            tasks=1, workers=1, logging_dir=str(work / "logs" / "cluster")),
        "filter_tokenize": LocalPipelineExecutor(
            [*readers(corpus), MinhashDedupFilter(str(work / "remove_ids")),
             DocumentTokenizer(str(work / "tokens"), tokenizer_name_or_path=str(tokenizer_json),
                               eos_token="</s>", shuffle_documents=False)],
            tasks=cpus, workers=cpus, logging_dir=str(work / "logs" / "filter_tokenize")),
    }
    seconds, blocks = {}, {}
    t_all = time.perf_counter()
    with TreeMemory(psutil.Process()) as tree:  # this process, its forkserver and the pool workers
        for name, executor in steps.items():
            print(f"side_by_side: datatrove {name} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            stats = executor.run()
            seconds[name] = round(time.perf_counter() - t0, 2)
            blocks[name] = _blocks(stats)
    wall = round(time.perf_counter() - t_all, 2)
    flt = _block(blocks["filter_tokenize"], "stage 4")
    tok = _block(blocks["filter_tokenize"], "TOKENIZER")
    return {"version": version("datatrove"), "workers": cpus,
            "tasks": {name: executor.world_size for name, executor in steps.items()},
            "minhash": {"shingles": f"word {WORD_NGRAMS}-grams of simplify_text(text) (spaCy English words)",
                        "bands": BANDS, "rows": ROWS, "hash_bits": 32, "seed": SEED},
            "wall_seconds": wall, "step_seconds": seconds, **tree.summary(), "blocks": blocks,
            "docs_in": _block(blocks["signatures"], "stage 1")["total"],
            "docs_removed": flt.get("dropped", 0), "docs_kept": flt.get("forwarded", 0),
            "tokens": tok.get("tokens", 0),
            "output_bytes": sum(p.stat().st_size for p in (work / "tokens").rglob("*") if p.is_file())}


def zyda2_side(corpus: Path, out: Path, cpus: int, partitions: int) -> dict:
    if not QUALITY_MODEL.is_file():  # what `make demo` trains first: the local recipe's fastText model
        subprocess.run([sys.executable, "zyda2.py", "train-quality", str(DATA / "quality" / "labels.jsonl"),
                        "--output", str(QUALITY_MODEL)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    result = run(corpus, out, partitions, cpus, [])
    report = json.loads((out / "report.json").read_text())
    per_source = {name: src["stages"] for name, src in report["sources"].items()}
    result["docs_after_dedup"] = sum(st["dedup"]["out"] for st in per_source.values())
    result["docs_removed_by_stage"] = {stage: sum(sum(st.get(stage, {}).get("removed", {}).values())
                                                  for st in per_source.values())
                                       for stage in report["stages"]}
    result["tokens"] = sum(st["tokenize"]["tokens"] for st in per_source.values())
    result["tokens_by_source"] = {name: st["tokenize"]["tokens"] for name, st in per_source.items()}
    return result


NOTES = [
    "zyda2 does more: it also normalises every record to one schema with ids and provenance, quarantines bad "
    "input, runs the heuristic filter stage (no source selected by the recipe: a pass-through), the fastText "
    "quality filter on zyda and dolma-cc plus FineWeb-Edu's int_score >= 3 cut, and writes Megatron shards, "
    "blends and Hub-layout parquet; its tokenize stage therefore encodes fewer documents than datatrove's.",
    "zyda2's MinHash is the recipe's: character 25-grams of the raw text; datatrove only shingles words "
    "(simplify_text: lowercase, no punctuation, normalised whitespace), so it uses 5-word n-grams.",
    "zyda2 removes only cross-source duplicates and keeps the highest-ranked source of a cluster "
    "(fwe > dclm > zyda > dolma-cc); datatrove keeps one arbitrary document per cluster and removes "
    "duplicates inside a source too, so its kept count is lower for the same clusters.",
    "datatrove's clustering (MinhashDedupCluster) is one process with an in-memory union-find; its bucket step "
    "needs a task count divisible by the bands; zyda2's buckets and components are distributed Ray tasks.",
    "datatrove reads the corpus twice (signatures, then filter); zyda2 reads the native files once (ingest) and "
    "its later stages read its own parquet.",
    "datatrove's tokenizer is a `tokenizers` BPE converted from the same SentencePiece model (it differs from "
    "SentencePiece on some runs of spaces); zyda2's ids are SentencePiece's exactly. Both append EOS.",
    "datatrove writes .ds token files (no shuffling here) and no Megatron .idx; zyda2 writes .bin/.idx shards.",
]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.side_by_side", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=250, help="MB of text in the corpus (default 250)")
    ap.add_argument("--files", type=int, default=64, help="input files, all sources together (default 64)")
    ap.add_argument("--cpus", type=int, default=2, help="cores for each side: ray.num_cpus, datatrove workers")
    ap.add_argument("--partitions", type=int, default=16, help="zyda2 dedup.partitions (default 16, the recipe's)")
    ap.add_argument("--workdir", default=None, help="corpus and runs (kept; default a temporary folder)")
    ap.add_argument("--name", default="side_by_side", help="results file name (default side_by_side)")
    a = ap.parse_args(argv)
    root = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="zyda2-side-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        corpus = make_corpus(root, a.mb, a.files)
        path = Path(corpus.pop("path"))
        print(f"side_by_side: {corpus['text_mb']} MB of text, {corpus['files']} files", file=sys.stderr, flush=True)
        dt_work, z_out = root / "datatrove", root / "zyda2"
        for d in (dt_work, z_out):
            shutil.rmtree(d, ignore_errors=True)
        load = {"start": os.getloadavg()[0]}  # other work on the machine: wall times wait for cores
        dt = datatrove_side(path, dt_work, a.cpus)
        load["after_datatrove"] = os.getloadavg()[0]
        shutil.rmtree(dt_work, ignore_errors=True)
        print("side_by_side: zyda2 run ...", file=sys.stderr, flush=True)
        z = zyda2_side(path, z_out, a.cpus, a.partitions)
        load["after_zyda2"] = os.getloadavg()[0]
        shutil.rmtree(z_out, ignore_errors=True)
        result = {"mb": a.mb, "cpus": a.cpus, "corpus": corpus, "datatrove": dt, "zyda2": z,
                  "ratio_datatrove_over_zyda2_wall": round(dt["wall_seconds"] / z["wall_seconds"], 2),
                  # on a shared machine CPU seconds are the steadier figure: wall time also counts waiting for a core
                  "ratio_datatrove_over_zyda2_cpu": round(dt["tree_cpu_seconds"] / z["tree_cpu_seconds"], 2),
                  "load_average_1min": load, "goal_ratio_min": 5.0, "notes": NOTES}
        print(json.dumps({k: v for k, v in result.items() if k != "notes"}, indent=1))
        write_results(a.name, result)
        return result
    finally:
        if not a.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
