"""Trainer throughput: tokens/s and peak memory of the `tiny` preset (and MFU on a GPU).

Each configuration runs in a fresh process (so peak RSS is its own) on shards made from the shared
fixture documents with the real tokenizer; throughput is the median step after 3 warm-up steps.
  python -m benchmarks.train            -> benchmarks/results/train.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import DATA, REPO, write_results

# Dense bf16 tensor-core peak (FLOP/s) for MFU, from the vendors' datasheets.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}
CONFIGS = [
    {"seq_len": 128, "micro_batch": 8, "threads": 2},
    {"seq_len": 256, "micro_batch": 8, "threads": 2},
    {"seq_len": 256, "micro_batch": 8, "threads": 1},
    {"seq_len": 1024, "micro_batch": 4, "threads": 2},
]


def make_run(folder: Path) -> Path:
    """A run folder with one train and one val shard of real fixture text (FineWeb-Edu parquet)."""
    import pyarrow.parquet as pq

    from pipelines.tokens.indexed import write_indexed
    from pipelines.tokens.tokenizer import encode
    texts = []
    for path in sorted((DATA / "sources" / "fineweb-edu").rglob("*.parquet")):
        texts += pq.read_table(path, columns=["text"]).column("text").to_pylist()
    ids = encode(texts, threads=2)
    for split, docs in (("train", ids[:-40]), ("val", ids[-40:])):
        lengths = np.array([len(d) for d in docs])
        write_indexed(folder / "shards" / "fwe3" / split / "part_00000",
                      np.concatenate([np.array(d, np.uint16) for d in docs]), lengths)
    return folder


def one(spec: dict) -> dict:
    import resource
    import time

    import torch

    from pipelines.training.train_config import load_train_config
    from pipelines.training.trainer import train
    steps = spec.get("steps", 15)
    cfg = load_train_config(REPO / "configs" / "train-local.yaml", [
        f"data.mixture=[{{run: '{spec['run']}', component: fwe3}}]", f"data.seq_len={spec['seq_len']}",
        f"micro_batch={spec['micro_batch']}", f"threads={spec['threads']}", f"steps={steps}",
        f"eval_every={steps}", f"checkpoint_every={steps}", "schedule.warmup_steps=2", "data.val_sequences=2",
        f"model={spec.get('model', 'tiny')}", f"device={spec.get('device', 'cpu')}"], output_dir=spec["out"])
    t0 = time.perf_counter()
    summary = train(cfg, overwrite=True, quiet=True)
    records = [json.loads(x) for x in (Path(spec["out"]) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if "loss" in r][3:]
    result = {**{k: v for k, v in spec.items() if k not in ("run", "out")}, "parameters": summary["parameters"],
              "tokens_per_s": round(float(np.median(rates)), 1), "wall_s": round(time.perf_counter() - t0, 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available() and spec.get("device") == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        result.update(gpu=name, peak_gpu_mem_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                      mfu=round(summary["flops_per_token"] * result["tokens_per_s"] / peak, 4) if peak else None)
    return result


def main() -> None:
    import torch
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        specs = [dict(c) for c in CONFIGS]
        if torch.cuda.is_available():
            specs += [{"seq_len": 2048, "micro_batch": 8, "threads": 4, "device": "cuda", "model": m, "steps": 20}
                      for m in ("tiny", "zamba2-1.2b")]
        results = []
        for k, spec in enumerate(specs):
            spec.update(run=str(run), out=str(Path(tmp) / f"out{k}"))
            proc = subprocess.run([sys.executable, "-m", "benchmarks.train", "--one", json.dumps(spec)], cwd=REPO,
                                  capture_output=True, text=True, check=True)
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    write_results("train", {"runs": results, "note": "median tokens/s after 3 warm-up steps; peak RSS of the "
                            "training process; fp32 on CPU (pure-PyTorch Mamba2 path), bf16 autocast on CUDA"})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(one(json.loads(sys.argv[2]))))
    else:
        main()
