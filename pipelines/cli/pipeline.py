"""`run` (with --plan and the end-of-run summary), `dedup`, `show-config`, `reroot-blends`, `submit`."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from pipelines.cli.common import CommandError, load_run_config, source_overrides


def cmd_run(args) -> int:
    from pipelines.core.run import run_pipeline
    from pipelines.pipeline import PIPELINE
    cfg = load_run_config(args)
    args.run_folder = Path(cfg.output_dir)
    if args.plan:
        from pipelines.core.run import check_output
        check_output(cfg, args.resume, args.overwrite)  # a plan says when the run would be refused
        return print_plan(cfg)
    report = run_pipeline(PIPELINE, cfg, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet,
                          command=args.command_line, allow_empty=args.allow_empty)
    print_run_summary(Path(cfg.output_dir), report, args.command_line)
    return 0


def print_plan(cfg) -> int:
    """`run --plan`: the input files per source, the stages and the outputs; reads no document."""
    from pipelines.core.run import check_inputs
    from pipelines.ingest.discover import discover
    from pipelines.pipeline import PIPELINE
    files = discover(cfg)
    for name, src in sorted(cfg.sources.items()):
        if not src.enabled:
            print(f"source {name}: disabled")
            continue
        mine = [f for f in files if f.source == name]
        urls = list(dict.fromkeys(m.url for f in mine for m in f.files))  # a split file's pieces share one
        size = sum(os.path.getsize(u) for u in urls if "://" not in u)
        print(f"source {name}: {len(urls)} files in {len(mine)} partitions, {size / 1e6:,.1f} MB under "
              f"{src.files_from or src.path}")
        for f in mine:
            more = len(f.members) - 1
            bundle = f" + {more} more file{'s' if more > 1 else ''}, read as one partition" if more > 0 else ""
            print(f"  {f.rel}  ({f.fmt}, id prefix {f.id_prefix}){bundle}")
    stages = PIPELINE.planned(cfg)
    print(f"stages ({len(stages)}): {' -> '.join(s.name for s in stages)}")
    out = Path(cfg.output_dir)
    state = "holds a run (needs --resume or --overwrite)" if (out / "manifest.json").exists() else \
        "exists and is not empty (refused)" if out.is_dir() and any(out.iterdir()) else "new"
    print(f"outputs: {out} ({state})\n  shards:  {out}/shards/<component>/{{train,anneal,val}}/*.bin,.idx\n"
          f"  blends:  {out}/shards/blends/{{pretrain,anneal}}.json\n  hub:     {out}/publish/data/\n"
          f"  report:  {out}/report.json, manifest: {out}/manifest.json, logs: {out}/logs/")
    check_inputs(cfg, files, allow_empty=True)
    print("plan only: nothing was run")
    return 0


def _top(counts: dict[str, int], n: int = 5) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {v:,}" for k, v in items[:n])
    return text + (f", {len(items) - n} more reasons" if len(items) > n else "")


def print_run_summary(out: Path, report: dict, command: list[str]) -> None:
    """End of `run`: counts, time, tokens per component, where everything is, what to do next."""
    from pipelines.core.outputs import read_json
    from pipelines.core.progress import format_seconds
    manifest = read_json(out / "manifest.json")
    t = report["totals"]
    attempts = manifest.get("attempts", [])
    wall = f"{format_seconds(attempts[-1]['seconds'])}" if attempts else "?"
    if len(attempts) > 1:
        wall += f" this attempt, {format_seconds(manifest.get('total_seconds', 0))} over {len(attempts)} attempts"
    print(f"read {t['read']:,} docs: kept {t['kept']:,}, removed {t['removed']:,}, "
          f"quarantined {t['quarantined']:,} | wall time {wall}")
    removed: dict[str, int] = {}
    quarantined: dict[str, int] = {}
    for _src, r in report["sources"].items():
        for reason, n in r["removed"].items():
            removed[reason] = removed.get(reason, 0) + n
        for reason, n in r.get("quarantine_reasons", {}).items():
            quarantined[reason] = quarantined.get(reason, 0) + n
    if removed:
        print(f"removed by stage:reason: {_top(removed)}")
    if t["quarantined"]:
        whole = [s for s, r in report["sources"].items() if r["read"] and r["quarantined"] == r["read"]]
        print(f"quarantined: {_top(quarantined)} -> records with reasons and excerpts in {out}/quarantine/"
              + (f" (every record of {', '.join(whole)})" if whole else ""))
    shards = report.get("details", {}).get("shards", {}).get("components", {})
    if shards:
        total = sum(c["train_tokens"] + c["val_tokens"] for c in shards.values())
        print(f"tokens: {total:,} (" + ", ".join(f"{name} {c['train_tokens'] + c['val_tokens']:,}"
                                                 for name, c in sorted(shards.items())) + ")")
        print(f"shards:  {out}/shards/<component>/{{train,anneal,val}}/ (Megatron .bin/.idx)\n"
              "blends:  " + ", ".join(str(p) for p in sorted((out / "shards" / "blends").glob("*.json")))
              + " (.txt beside each: Megatron --train-data-path / --valid-data-path; see README)")
        if (out / "publish" / "data").is_dir():
            print(f"hub:     {out}/publish/data/ (parquet; upload: python zyda2.py publish {out} --repo ORG/NAME)")
    print(f"outputs: {out}\nreport:  {out}/report.json; logs: {out}/logs/")
    print(f"next:    python zyda2.py stats {out}   (HTML report)" + (
        f"\n         python zyda2.py train configs/train-local.yaml --set \"data.mixture=[{{run: '{out}', "
        "blend: pretrain}]\"" if shards else ""))


def cmd_dedup(args) -> int:
    from pipelines.core.run import rerun_dedup
    from pipelines.pipeline import PIPELINE
    args.run_folder = Path(args.output)
    report = rerun_dedup(PIPELINE, Path(args.run_dir), args.overrides, Path(args.output), quiet=args.quiet,
                         overwrite=args.overwrite, resume=args.resume, command=args.command_line)
    for source, r in report["sources"].items():
        d = r["stages"]["dedup"]
        print(f"{source:9s} in {d['in']:>9,}  removed {sum(d['removed'].values()):>9,}  "
              f"clusters {d.get('clusters', 0):>8,}  largest {d.get('largest_cluster', 0):>5,}")
    print(f"decisions: {args.output}/dedup/decisions/\nreport:    {args.output}/report.json")
    return 0


def cmd_show_config(args) -> int:
    cfg = load_run_config(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    print(f"# config hash: {cfg.hash()}")
    return 0


def cmd_reroot_blends(args) -> int:
    from pipelines.tokens.shards import reroot_blends
    for path in reroot_blends(Path(args.run_dir), args.root):
        print(path)
    return 0


def cmd_submit(args) -> int:
    from jobs.submit import env_vars, job_args, submit
    cfg = load_run_config(args)
    run_args = job_args(cfg, args.config, source_overrides(args.sources) + list(args.overrides),
                        ["--resume"] * args.resume + ["--overwrite"] * args.overwrite
                        + ["--allow-empty"] * args.allow_empty)
    env = env_vars(args.env)
    if args.kuberay:
        from jobs.kuberay import rayjob, write_rayjob
        if not args.working_dir_uri:
            raise CommandError("--kuberay needs --working-dir-uri: pods cannot see this folder; upload a zip of it "
                               "(git archive -o zyda2.zip HEAD) to https/s3/gs and give its URI")
        write_rayjob(args.kuberay, rayjob(cfg, run_args, args.working_dir_uri, env, python=args.python))
        print(f"wrote {args.kuberay}; start it with: kubectl apply -f {args.kuberay}")
        return 0
    if not args.address:
        raise CommandError("give the cluster's job server with --address http://HEAD:8265 (or set RAY_ADDRESS)")
    return submit(cfg, run_args, args.address, env, python=args.python, wait=not args.no_wait)
