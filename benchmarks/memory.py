"""Peak memory per Ray worker, stage by stage, at 1x and 4x input: memory must follow the
configured batch and partition sizes, not the input size (target: 4x / 1x <= 1.5 for every stage).

Input: real text from /usr/share/doc as the four sources' native files (files of equal size, so 4x
input = 4x as many files). Each stage runs on its own (`only=`, resuming the run so earlier stages
are not redone) while a thread samples the resident memory (VmRSS) of every Ray worker process every
20 ms. Worker RSS includes object-store pages the worker has mapped.

  python -m benchmarks.memory            # writes benchmarks/results/memory.json
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import REPO, doc_corpus, ray_workers_rss_mb, take_mb, write_results
from benchmarks.minhash import write_sources
from pipelines.core.config import load_config
from pipelines.pipeline import PIPELINE

BASE_MB = 12


def measure(scale: int, corpus: list[str]) -> dict:
    import ray

    from pipelines.core.run import run_pipeline
    docs, n = take_mb(corpus, BASE_MB * scale)
    root = Path(tempfile.mkdtemp(prefix=f"zyda2-mem-{scale}x-"))
    write_sources(docs, root / "in")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    peaks: dict[str, float] = {}
    try:
        cfg = load_config(REPO / "configs" / "local.yaml", ["heuristic_filter.apply_to=[zyda, dolma-cc]"],
                          input_dir=str(root / "in"), output_dir=str(root / "out"))
        names = [s.name for s in PIPELINE]
        for i, name in enumerate(names):
            samples: list[float] = []
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    samples.append(max(ray_workers_rss_mb("VmRSS"), default=0.0))
                    time.sleep(0.02)
            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            try:
                run_pipeline(PIPELINE, cfg, resume=i > 0, quiet=True, only=names[: i + 1])
            finally:
                stop.set()
                thread.join()
            peaks[name] = round(max(samples, default=0.0), 1)
        return {"scale": scale, "docs": len(docs), "text_mb": round(n / 1e6, 1),
                "input_files": len(list((root / "out" / "ingest").rglob("*.parquet"))), "worker_peak_rss_mb": peaks}
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    corpus = doc_corpus(BASE_MB * 4 * 1.1)
    one, four = measure(1, corpus), measure(4, corpus)
    ratios = {s: round(four["worker_peak_rss_mb"][s] / one["worker_peak_rss_mb"][s], 2)
              for s in one["worker_peak_rss_mb"]}
    result = {"1x": one, "4x": four, "ratio_4x_over_1x": ratios, "target_max_ratio": 1.5}
    print(json.dumps(result, indent=1))
    write_results("memory", result)


if __name__ == "__main__":
    main()
