"""Same text, more files: the whole pipeline on one corpus written as `--base-files` and as `--files`
input files (../shared/tools/make_scale_corpus.py writes the same documents whatever the file count),
with `dedup.partitions` raised as a cluster run would. Ratios near 1 mean the cost follows the text,
not the number of files (issue 18: wall ratio <= 1.2, peak RSS of any process <= 1.5 GB, intermediate
bytes <= 0.5x the text: every byte of the run folder but the products (PRODUCTS), logs and markers).
Per stage, MB of corpus text per second per core.

Each run is `zyda2.py run configs/local.yaml` in its own process (its own local Ray instance), so
every process of the run is in its process tree: a thread samples their resident memory every 0.2 s
and reads each one's kernel peak (VmHWM). A Ray worker's RSS includes the object-store pages it has
mapped. Per-stage seconds come from the run's manifest.json, the Ray tasks (or actor calls) each
step started and the Ray objects dedup's shuffle steps made from its attempt record.
`documents_pass_cpu_seconds`: one read of the documents copy ingest wrote (what a later stage pays to
re-read the text rather than get it from ingest's pass).

  python -m benchmarks.scale [--mb 250] [--files 4000] [--base-files 64] [--partitions 256]
                             [--repeat 3] [--cpus N] [--workdir DIR] [--set KEY=VALUE ...]
      -> benchmarks/results/scale.json  (`--set ray.task_group_files=1`: one task per file, as before
         grouped inputs; `--files N --base-files N`: one run, its rates only, e.g. the 1 GB run:
         `--mb 1000 --files 64 --base-files 64 --name scale-1gb`, which benchmarks.projection reads)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.common import DATA, REPO, write_results
from pipelines.core.schema import read_documents

TOOL = DATA.parent / "tools" / "make_scale_corpus.py"
SOURCES = 4  # make_scale_corpus writes `--files-per-source` files for each of the four sources


def make_corpus(root: Path, mb: float, files: int, seed: int = 1) -> dict:
    """The corpus of `mb` MB of text in `files` files (reused when already written under `root`)."""
    out = root / f"corpus-{mb:g}mb-{files}files-seed{seed}"
    info_path = root / f"{out.name}.json"
    if info_path.exists() and out.is_dir():
        return {**json.loads(info_path.read_text()), "path": str(out)}
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(TOOL), str(out), "--mb", str(mb), "--seed", str(seed),
                           "--files-per-source", str(max(1, files // SOURCES))],
                          check=True, capture_output=True, text=True)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    info["build_seconds"] = round(time.perf_counter() - t0, 1)
    info["bytes_on_disk"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    info_path.write_text(json.dumps(info))
    return {**info, "path": str(out)}


class TreeMemory:
    """Peak resident memory of a process and all its descendants, by kind (driver, Ray worker, other),
    and the CPU seconds they used while watched (user + system, as last sampled: a process's final
    0.2 s may be missed)."""

    def __init__(self, root: psutil.Process, every: float = 0.2):
        self.root, self.every = root, every
        self.peak: dict[int, tuple[str, float]] = {}  # pid -> (kind, peak MB)
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds at the last sample
        self.cpu_base: dict[int, float] = {}  # pid -> CPU seconds when first seen, for processes older than us
        self.sampler_cpu = 0.0
        self.peak_total = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _kind(self, p: psutil.Process) -> str:
        if p.pid == self.root.pid:
            return "driver"
        cmd = " ".join(p.cmdline())
        return "worker" if "default_worker.py" in cmd or cmd.startswith("ray::") else "other"

    def _sample(self) -> None:
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except psutil.Error:
            return
        total = 0.0
        for p in procs:
            try:
                rss = p.memory_info().rss / 2**20
                with open(f"/proc/{p.pid}/status") as f:
                    hwm = next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")), 0.0)
                kind = self.peak[p.pid][0] if p.pid in self.peak else self._kind(p)
                times = p.cpu_times()
            except (psutil.Error, OSError):
                continue
            self.cpu[p.pid] = times.user + times.system
            total += rss
            self.peak[p.pid] = (kind, max(self.peak.get(p.pid, (kind, 0.0))[1], rss, hwm))
        self.peak_total = max(self.peak_total, total)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self._sample()
            time.sleep(self.every)
        self.sampler_cpu = time.thread_time()  # this thread's own CPU, not the watched work's when root is us

    def __enter__(self):
        for p in [self.root] + self.root.children(recursive=True):
            try:
                times = p.cpu_times()
                self.cpu_base[p.pid] = times.user + times.system
            except psutil.Error:
                continue
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self._sample()

    def summary(self) -> dict:
        by_kind: dict[str, list[float]] = {}
        for kind, mb in self.peak.values():
            by_kind.setdefault(kind, []).append(mb)
        return {"driver_peak_rss_mb": round(max(by_kind.get("driver", [0.0])), 1),
                "worker_peak_rss_mb": round(max(by_kind.get("worker", [0.0])), 1),
                "other_ray_peak_rss_mb": round(max(by_kind.get("other", [0.0])), 1),
                "ray_workers_seen": len(by_kind.get("worker", [])),
                "tree_peak_rss_mb": round(self.peak_total, 1),
                "tree_cpu_seconds": round(sum(c - self.cpu_base.get(pid, 0.0) for pid, c in self.cpu.items())
                                          - (self.sampler_cpu if self.root.pid == os.getpid() else 0.0), 1)}


# what a run is for (issue 18 counts every other byte as intermediate): shards, the Hub parquet, dedup
# decisions and the signature cache, quarantine, and the report/manifest at the top
PRODUCTS = ("shards", "publish", "dedup/decisions", "dedup/signatures", "quarantine")
BOOKKEEPING = ("logs", "_done")  # per-task logs and completion markers


def bytes_by_kind(out: Path) -> dict:
    """Bytes of a finished run folder: products, bookkeeping, intermediates (by top folder)."""
    kinds = {"products": 0, "bookkeeping": 0, "intermediate": 0, "intermediate_by_folder": {}}
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(out).as_posix()
        size = p.stat().st_size
        if "/" not in rel:
            kinds["products"] += size
        elif any(rel == k or rel.startswith(k + "/") for k in PRODUCTS):
            kinds["products"] += size
        elif any(part in BOOKKEEPING for part in rel.split("/")[:2]):
            kinds["bookkeeping"] += size
        else:
            kinds["intermediate"] += size
            top = rel.split("/")[0]
            kinds["intermediate_by_folder"][top] = kinds["intermediate_by_folder"].get(top, 0) + size
    return kinds


def documents_pass_seconds(out: Path) -> float:
    """CPU seconds of one read of every document ingest wrote (all columns, in this process): what each
    later stage that reads the text (heuristics, signatures, quality, tokenize) pays for reading its
    input from the one documents copy instead of from a pass fused with ingest."""
    t0 = time.process_time()
    for path in sorted((out / "ingest").glob("*/*.parquet")):
        read_documents(path)
    return round(time.process_time() - t0, 2)


def run(corpus: Path, out: Path, partitions: int, cpus: int | None, sets: list[str]) -> dict:
    """One `zyda2.py run` of the local recipe over `corpus`: wall time, stages, memory, tasks."""
    settings = [f"dedup.partitions={partitions}"] + ([f"ray.num_cpus={cpus}"] if cpus else []) + sets
    cmd = [sys.executable, "zyda2.py", "run", "configs/local.yaml", "--input", str(corpus), "--output", str(out),
           "--quiet", *[a for s in settings for a in ("--set", s)]]
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with TreeMemory(proc) as mem:
        _, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "report.json").read_text())
    tasks = manifest["attempts"][-1].get("tasks", {})
    objects = manifest["attempts"][-1].get("objects", {})
    partitions = len(list((out / "ingest" / "_done").iterdir()))  # a bundle of small files is one
    return {"ingest_partitions": partitions, "settings": settings, "wall_seconds": round(wall, 1),
            "pipeline_seconds": manifest["total_seconds"],
            "stage_seconds": {name: st["seconds"] for name, st in manifest["stages"].items()},
            "ray_tasks": tasks, "ray_tasks_total": sum(tasks.values()),
            "dedup_objects": objects, "dedup_objects_total": sum(objects.values()),
            "bucket_shuffle_objects": objects.get("dedup/bucket_map", 0) + objects.get("dedup/buckets", 0),
            **mem.summary(),
            "docs_read": report["totals"]["read"], "docs_quarantined": report["totals"]["quarantined"],
            "docs_kept": report["totals"]["kept"],
            "output_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
            "bytes": bytes_by_kind(out), "documents_pass_cpu_seconds": documents_pass_seconds(out)}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def compare(base: dict, many: dict, name: str) -> dict:
    """The many-files run against the reference run: ratios, whether both read the same texts, the targets."""
    stages = base["stage_seconds"]
    ratios = {"wall": ratio(many["wall_seconds"], base["wall_seconds"]),
              "pipeline": ratio(many["pipeline_seconds"], base["pipeline_seconds"]),
              "stages": {s: ratio(many["stage_seconds"].get(s, 0), stages[s]) for s in stages},
              "tree_peak_rss": ratio(many["tree_peak_rss_mb"], base["tree_peak_rss_mb"]),
              "max_process_peak_rss": ratio(max(many["driver_peak_rss_mb"], many["worker_peak_rss_mb"]),
                                            max(base["driver_peak_rss_mb"], base["worker_peak_rss_mb"]))}
    return {name: ratios,
            # the same texts (make_scale_corpus may end a source with an empty file: one quarantined
            # record); kept counts may differ a little: it draws fwe's int_score and the ids file by
            # file, so another split gives some documents other scores
            "same_texts": base["docs_read"] - base["docs_quarantined"] == many["docs_read"] - many["docs_quarantined"],
            "targets": {"wall_ratio_max": 1.2, "process_peak_rss_mb_max": 1536, "intermediate_over_text_max": 0.5}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=250, help="MB of text in the corpus (default 250)")
    ap.add_argument("--files", type=int, default=4000, help="input files of the many-files run (default 4000)")
    ap.add_argument("--base-files", type=int, default=64, help="input files of the reference run (default 64)")
    ap.add_argument("--partitions", type=int, default=256, help="dedup.partitions (default 256)")
    ap.add_argument("--cpus", type=int, default=None, help="ray.num_cpus (default: every core)")
    ap.add_argument("--workdir", default=None, help="corpora and runs (kept; default a temporary folder)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override for both runs")
    ap.add_argument("--name", default="scale", help="results file name (default scale)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each corpus; the one with the median wall time is reported (default 3)")
    a = ap.parse_args(argv)
    root = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="zyda2-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        runs = {}
        for files in dict.fromkeys((a.base_files, a.files)):  # --files = --base-files: one run (rates only)
            corpus = make_corpus(root, a.mb, files)
            out = root / f"run-{a.mb:g}mb-{files}files"
            tries = []
            for k in range(a.repeat):  # a shared 2-core machine varies by ~10% run to run: the median run
                shutil.rmtree(out, ignore_errors=True)
                print(f"scale: {corpus['text_mb']} MB of text in {files} files, run {k + 1}/{a.repeat} ...",
                      file=sys.stderr, flush=True)
                tries.append(run(Path(corpus["path"]), out, a.partitions, a.cpus, a.sets))
            median = sorted(tries, key=lambda t: t["wall_seconds"])[len(tries) // 2]
            row = runs[str(files)] = {"corpus": {k: v for k, v in corpus.items() if k != "path"}, **median,
                                      "wall_seconds_all_runs": [t["wall_seconds"] for t in tries]}
            text = corpus["text_mb"] * 1e6
            row["intermediate_over_text"] = round(row["bytes"]["intermediate"] / text, 3)
            cores = a.cpus or psutil.cpu_count()
            row["mb_per_s_per_core"] = {s: round(corpus["text_mb"] / (sec * cores), 2)
                                        for s, sec in row["stage_seconds"].items() if sec > 0.01}
            row["mb_per_s_per_core"]["pipeline"] = round(corpus["text_mb"] / (row["pipeline_seconds"] * cores), 2)
            shutil.rmtree(out, ignore_errors=True)
        result = {"mb": a.mb, "partitions": a.partitions, "cpus": a.cpus, "overrides": a.sets, "repeat": a.repeat,
                  "runs": runs}
        base, many = runs[str(a.base_files)], runs[str(a.files)]
        if base is not many:
            result.update(compare(base, many, f"ratio_{a.files}_over_{a.base_files}_files"))
        print(json.dumps(result, indent=1))
        write_results(a.name, result)
        return result
    finally:
        if not a.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
