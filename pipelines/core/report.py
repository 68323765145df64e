"""Run accounting: `report.json` and the identity every run must satisfy.

For each source: docs read = kept + removed (summed over stages and reasons) + quarantined.
A quarantine record stands for one unreadable record, or for the unreadable rest of a truncated
file. The report holds counts only (no timings), so two runs of the same input and config give a
byte-identical report; timings live in `manifest.json`.
"""

from __future__ import annotations


class AccountingError(RuntimeError):
    """Documents were lost or invented between stages: the run's outputs cannot be trusted."""


def build_report(stage_results: dict[str, dict[str, dict]], details: dict[str, dict] | None = None) -> dict:
    stages = list(stage_results)
    sources = sorted({s for per_source in stage_results.values() for s in per_source})
    report = {"stages": stages, "sources": {}, "totals": {}, "details": details or {}}
    problems = []
    for src in sources:
        per_stage = {st: stage_results[st][src] for st in stages if src in stage_results[st]}
        ingest = per_stage["ingest"]
        read, quarantined = ingest["in"], sum(s["quarantined"] for s in per_stage.values())
        removed = {f"{st}:{reason}": n for st, s in per_stage.items() for reason, n in s["removed"].items()}
        kept = per_stage[stages[-1]]["out"]
        prev_out = None
        for st, s in per_stage.items():
            if prev_out is not None and s["in"] != prev_out:
                problems.append(f"{src}: stage {st} received {s['in']} docs but the stage before emitted {prev_out}")
            if s["in"] != s["out"] + sum(s["removed"].values()) + s["quarantined"]:
                problems.append(f"{src}: stage {st} in={s['in']} != out={s['out']} + removed="
                                f"{sum(s['removed'].values())} + quarantined={s['quarantined']}")
            prev_out = s["out"]
        balanced = read == kept + sum(removed.values()) + quarantined
        if not balanced:
            problems.append(f"{src}: read {read} != kept {kept} + removed {sum(removed.values())} "
                            f"+ quarantined {quarantined}")
        report["sources"][src] = {
            "read": read, "kept": kept, "removed": dict(sorted(removed.items())), "quarantined": quarantined,
            "quarantine_reasons": ingest.get("quarantine_reasons", {}), "balanced": balanced,
            "stages": per_stage,
        }
    totals = {k: sum(r[k] for r in report["sources"].values()) for k in ("read", "kept", "quarantined")}
    totals["removed"] = sum(sum(r["removed"].values()) for r in report["sources"].values())
    totals["balanced"] = not problems
    report["totals"] = totals
    report["problems"] = problems
    return report


def check_report(report: dict) -> None:
    if report["problems"]:
        raise AccountingError("accounting identity violated:\n  " + "\n  ".join(report["problems"]))
