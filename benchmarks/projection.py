"""The full Zyda-2 on a CPU Ray cluster, projected from this repo's measured end-to-end rates.

Inputs (all measured here, on this machine's cores):
  - whole-pipeline runs of `benchmarks.scale` (`--scale`, default the 250 MB and 1 GB results,
    benchmarks/results/scale.json and scale-1gb.json): per stage, the wall seconds it took x the
    cores it had (an upper bound: a stage that leaves cores idle is charged for them), and the CPU
    seconds of the whole process tree. With two sizes of the same file count, the cost per MB is the
    slope between them, so a run's fixed costs (starting Ray and its workers, planning, the report)
    are not charged per MB; with one, cost / MB (an overestimate);
  - `benchmarks.dedup_scale` (benchmarks/results/dedup_scale.json): the global dedup steps per
    document, as a cross-check of the dedup stage's per-MB figure.
Every other number is an assumption, written into the output under `assumptions`.

  python -m benchmarks.projection [--scale FILE ...] [--dedup FILE]
      -> benchmarks/results/projection.json and a Markdown table on stdout (the README's)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks.common import RESULTS, write_results

ASSUMPTIONS = {
    "text_tb": 20.0,               # issue 18: ~20 TB of text in the four sources before dedup
    "documents_b": 5.0,            # ~5 B documents (RECIPE.md: the original run)
    "input_files": 30_000,         # tens of thousands of files (issue 18)
    "classifier_documents_m": 700,  # Zyda-1 + Dolma-CC, scored by the DeBERTa classifier on GPUs (issue 19)
    "node_cores": 64,
    "node_memory_gb": 256,
    "task_cpus": 0.5,              # ray.task_cpus of the recipe: two tasks per core
    "dedup_partitions": 4096,
    "mb": 1e6,                     # text MB as the corpus tool counts them (10^6 bytes of UTF-8)
}
GOAL_CORE_HOURS = 600  # issue 18: everything but the classifier
CLASSIFIER_STAGE = "quality_filter"  # on the fixtures a fastText stand-in; the recipe's DeBERTa runs on GPUs


def runs_by_size(scales: list[dict]) -> list[tuple[dict, int]]:
    """(run, cores) of every result, the file count of the largest run only, by text size."""
    rows = [(r, sc["cpus"] or sc["machine"]["cores"]) for sc in scales for r in sc["runs"].values()]
    files = max(rows, key=lambda x: x[0]["corpus"]["text_mb"])[0]["corpus"]["files"]
    rows = [x for x in rows if x[0]["corpus"]["files"] == files]
    return sorted({x[0]["corpus"]["text_mb"]: x for x in rows}.values(), key=lambda x: x[0]["corpus"]["text_mb"])


def per_mb(small: tuple[dict, int] | None, large: tuple[dict, int], value) -> float:
    """Core-seconds per MB of `value(run, cores)`: the slope between two sizes, else value / MB."""
    run, cores = large
    if small is None:
        return value(*large) / run["corpus"]["text_mb"]
    d_mb = run["corpus"]["text_mb"] - small[0]["corpus"]["text_mb"]
    return max(value(*large) - value(*small), 0.0) / d_mb


def project(scales: list[dict], dedup: dict, a: dict = ASSUMPTIONS) -> dict:
    sized = runs_by_size(scales)
    large = sized[-1]
    small = sized[-2] if len(sized) > 1 else None
    run, cores = large
    total_mb = a["text_tb"] * 1e12 / a["mb"]
    stages = {}
    for name in run["stage_seconds"]:
        core_s = per_mb(small, large, lambda r, c, n=name: r["stage_seconds"].get(n, 0.0) * c)
        stages[name] = {"core_seconds_per_mb": round(core_s, 4),
                        "mb_per_s_per_core": round(1 / core_s, 2) if core_s else None,
                        "core_hours": round(core_s * total_mb / 3600, 1)}
    wall_total = sum(s["core_hours"] for n, s in stages.items() if n != CLASSIFIER_STAGE)
    # the same from the largest run alone, its fixed costs charged per MB (an upper bound)
    alone = sum(per_mb(None, large, lambda r, c, n=name: r["stage_seconds"].get(n, 0.0) * c)
                for name in run["stage_seconds"] if name != CLASSIFIER_STAGE) * total_mb / 3600
    cpu = None
    if "tree_cpu_seconds" in run and (small is None or "tree_cpu_seconds" in small[0]):
        cpu_s = per_mb(small, large, lambda r, c: r["tree_cpu_seconds"])
        cpu = {"core_seconds_per_mb": round(cpu_s, 4), "core_hours_all_stages": round(cpu_s * total_mb / 3600, 1)}
    docs_per_s = dedup.get("docs_per_s")
    dedup_global = round(a["documents_b"] * 1e9 / docs_per_s / 3600 * dedup["machine"]["cores"], 1) \
        if docs_per_s else None
    tasks_per_node = a["node_cores"] / a["task_cpus"]
    worker_mb = max(r["worker_peak_rss_mb"] for r, _ in sized)
    intermediate = run.get("intermediate_over_text")
    maps = math.ceil(a["input_files"] / 64)  # dedup map tasks: file groups of ray.task_group_files (64)
    return {
        "assumptions": a,
        "from": {"runs": [{"text_mb": r["corpus"]["text_mb"], "files": r["corpus"]["files"], "cores": c,
                           "wall_seconds": r["wall_seconds"], "stage_seconds": r["stage_seconds"],
                           "tree_cpu_seconds": r.get("tree_cpu_seconds")} for r, c in sized],
                 "per_mb": "slope between the two largest sizes" if small else "cost / MB of one run",
                 "dedup_scale_documents": dedup.get("documents")},
        "stages": stages,
        "core_hours_without_classifier": round(wall_total, 1),
        "core_hours_without_classifier_largest_run_alone": round(alone, 1),
        "cpu_seconds_basis": cpu,
        "goal_core_hours": GOAL_CORE_HOURS,
        "meets_goal": wall_total <= GOAL_CORE_HOURS,
        "classifier": {"stage": CLASSIFIER_STAGE, "documents_m": a["classifier_documents_m"],
                       "note": "DeBERTa on GPU actors: projected apart (issue 19); the CPU figure above is "
                               "the fixtures' fastText stand-in"},
        "dedup_global_steps_core_hours_from_dedup_scale": dedup_global,
        "memory": {"largest_worker_peak_mb": worker_mb, "tasks_per_node": tasks_per_node,
                   "node_peak_gb_upper_bound": round(worker_mb * tasks_per_node / 1024, 1),
                   "node_memory_gb": a["node_memory_gb"]},
        "intermediate": {"over_text": intermediate,
                         "tb": round(intermediate * a["text_tb"], 2) if intermediate is not None else None},
        "dedup_objects_per_step": {"maps": maps, "partitions": a["dedup_partitions"],
                                   "objects": maps + a["dedup_partitions"],
                                   "object_store_shuffle_would_be": maps * a["dedup_partitions"]},
    }


def table(p: dict) -> str:
    rows = ["| stage | measured MB/s per core | core-hours for 20 TB |", "|---|---|---|"]
    for name, s in p["stages"].items():
        note = " (GPU classifier in the recipe: apart)" if name == CLASSIFIER_STAGE else ""
        rows.append(f"| {name}{note} | {s['mb_per_s_per_core']} | {s['core_hours']:,} |")
    rows.append(f"| **total without the classifier** | | **{p['core_hours_without_classifier']:,}** "
                f"(goal <= {p['goal_core_hours']}; {p['core_hours_without_classifier_largest_run_alone']:,} "
                "from the largest run alone) |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.projection", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", nargs="+", default=[str(RESULTS / "scale.json"), str(RESULTS / "scale-1gb.json")])
    ap.add_argument("--dedup", default=str(RESULTS / "dedup_scale.json"))
    args = ap.parse_args(argv)
    p = project([json.loads(Path(f).read_text()) for f in args.scale], json.loads(Path(args.dedup).read_text()))
    write_results("projection", p)
    print(table(p))
    return p


if __name__ == "__main__":
    main()
