#!/usr/bin/env python3
"""zyda2: rebuild the Zyda-2 pretraining dataset on Ray.

  python zyda2.py run configs/local.yaml                 # whole pipeline on the shared fixtures
  python zyda2.py run configs/zyda2.yaml --output /data/zyda2 --resume
  python zyda2.py show-config configs/local.yaml --set dedup.bands=16 --set dedup.rows=8
  python zyda2.py train configs/train-local.yaml         # tiny Zamba2 on the run's shards
  python zyda2.py eval runs/train-local/checkpoints/step_0000300 --run runs/local
  python zyda2.py ablate configs/ablate-local.yaml       # annealing ablation: candidates x seeds
  python zyda2.py publish runs/local --repo ORG/NAME --dry-run
  python zyda2.py stats runs/local                       # HTML run report
  python zyda2.py reroot-blends /lustre/zyda2            # Megatron blend paths after moving a run
"""

from __future__ import annotations

import argparse
import difflib
import errno
import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import traceback
from pathlib import Path

try:
    import yaml

    from pipelines.core.config import SOURCE_NAMES, ConfigError, load_config
except ModuleNotFoundError as _missing:  # run by a Python without the project installed
    print(f"zyda2: error: Python module {_missing.name!r} is missing: run with the project's environment "
          f"(.venv/bin/python zyda2.py ..., after `make install`), not {sys.executable}", file=sys.stderr)
    sys.exit(2)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which (exit code 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_received: list[int] = []  # the first signal: Ray re-raises an interrupt as a plain KeyboardInterrupt


def _on_signal(signum, frame):
    # later signals are ignored so that the cleanup (Ray shutdown, manifest) runs to its end
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _received.append(signum)
    raise Interrupted(signum)


def install_signal_handlers() -> bool:
    """SIGINT and SIGTERM raise `Interrupted`; False (nothing installed) off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    return True


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config, e.g. configs/local.yaml (the local default) or configs/zyda2.yaml")
    p.add_argument("--input", metavar="DIR", help="folder laid out like ../shared/data/sources "
                   "(dclm/, fineweb-edu/, zyda/, dolma-cc/): every source is read from there (a source given "
                   "as a URL from DIR/<its folder>); refused for a source with an absolute local path")
    p.add_argument("--output", metavar="DIR", help="run folder; overrides output_dir")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config key, dotted (repeatable): --set ingest.batch_docs=512")
    p.add_argument("--sources", metavar="NAMES", help=f"comma-separated subset of the sources to run "
                   f"({','.join(SOURCE_NAMES)}); the others are disabled (as --set sources.NAME.enabled=false)")


SOURCE_ALIASES = {"fineweb-edu": "fwe", "dolma": "dolma-cc"}  # the input folder names work too


def source_overrides(names: str | None) -> list[str]:
    """`--sources dclm,fwe` as the `--set` overrides that disable every other source."""
    if not names:
        return []
    wanted = [SOURCE_ALIASES.get(n.strip(), n.strip()) for n in names.split(",") if n.strip()]
    for n in wanted:
        if n not in SOURCE_NAMES:
            close = difflib.get_close_matches(n, SOURCE_NAMES, 1)
            raise ConfigError(f"--sources: unknown source {n!r}" + (f" (did you mean {close[0]}?)" if close else "")
                              + f"; known: {','.join(SOURCE_NAMES)}")
    if not wanted:
        raise ConfigError(f"--sources: name at least one source ({','.join(SOURCE_NAMES)})")
    return [f"sources.{n}.enabled={'true' if n in wanted else 'false'}" for n in SOURCE_NAMES]


def _load(args):
    overrides = source_overrides(getattr(args, "sources", None)) + list(args.overrides)
    return load_config(args.config, overrides, input_dir=args.input, output_dir=args.output)


def cmd_run(args) -> int:
    from pipelines.core.run import run_pipeline
    cfg = _load(args)
    args.run_folder = Path(cfg.output_dir)
    if args.plan:
        from pipelines.core.run import check_output
        check_output(cfg, args.resume, args.overwrite)  # a plan says when the run would be refused
        return print_plan(cfg)
    report = run_pipeline(cfg, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet,
                          command=args.command_line, allow_empty=args.allow_empty)
    print_run_summary(Path(cfg.output_dir), report, args.command_line)
    return 0


def print_plan(cfg) -> int:
    """`run --plan`: the input files per source, the stages and the outputs; reads no document."""
    from pipelines.core.graph import planned_stages
    from pipelines.core.run import check_inputs
    from pipelines.core.sources import discover
    files = discover(cfg)
    for name, src in sorted(cfg.sources.items()):
        if not src.enabled:
            print(f"source {name}: disabled")
            continue
        mine = [f for f in files if f.source == name]
        size = sum(os.path.getsize(f.url) for f in mine if "://" not in f.url)
        print(f"source {name}: {len(mine)} files, {size / 1e6:,.1f} MB under {src.files_from or src.path}")
        for f in mine:
            print(f"  {f.rel}  ({f.fmt}, id prefix {f.id_prefix})")
    stages = planned_stages(cfg)
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
    for src, r in report["sources"].items():
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
    args.run_folder = Path(args.output)
    report = rerun_dedup(Path(args.run_dir), args.overrides, Path(args.output), quiet=args.quiet,
                         overwrite=args.overwrite, resume=args.resume, command=args.command_line)
    for source, r in report["sources"].items():
        d = r["stages"]["dedup"]
        print(f"{source:9s} in {d['in']:>9,}  removed {sum(d['removed'].values()):>9,}  "
              f"clusters {d.get('clusters', 0):>8,}  largest {d.get('largest_cluster', 0):>5,}")
    print(f"decisions: {args.output}/dedup/decisions/\nreport:    {args.output}/report.json")
    return 0


def cmd_train_quality(args) -> int:
    from filters.quality import read_folders, train_fasttext
    from pipelines.core.run import RunError
    if args.labels:
        data = _labels(args.labels)
    elif args.positive and args.negative:
        data = read_folders(args.positive, args.negative)
    else:
        raise RunError("train-quality: give LABELS.jsonl, or --positive DIR and --negative DIR")
    report = train_fasttext(data, args.output, seed=args.seed, quantize=not args.no_quantize)
    if args.labels:  # lets eval-quality tell when it is given documents the model was trained on
        report["labels_file"] = str(Path(args.labels).resolve())
        Path(args.output + ".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def _labels(path: str):
    """The labelled documents of a JSONL file; a malformed file is a one-line error."""
    from filters.quality import read_labels
    from pipelines.core.run import RunError
    try:
        return read_labels(path)
    except ValueError as e:  # json.JSONDecodeError included
        raise RunError(f"{path}: not a labels file ({str(e).splitlines()[0]}); each line is "
                       "{\"text\": ..., \"label\": \"good\"|\"bad\"}") from None


def cmd_eval_quality(args) -> int:
    import numpy as np

    from filters.quality import load_classifier, metrics
    from pipelines.core.config import QualityFilterConfig
    backend = "deberta" if Path(args.model).is_dir() or not Path(args.model).exists() else "fasttext"
    cfg = QualityFilterConfig(backend=backend, model=args.model, threshold=args.threshold, device=args.device,
                              keep_labels=args.keep_labels.split(","))
    model = load_classifier(cfg)
    data = _labels(args.labels)
    preds, prob_high = model.predict(data.texts)
    result = {"model": args.model, "backend": backend, "labels": args.labels,
              **metrics(data.good, np.isin(preds, cfg.keep_labels), prob_high)}
    overlap = training_overlap(Path(args.model), data.texts)
    if overlap is not None:
        result["train_overlap"] = overlap
    print(json.dumps(result, indent=2))
    if overlap and overlap["documents"]:
        print(f"zyda2: warning: {overlap['documents']:,} of {len(data.texts):,} documents of {args.labels} are in "
              f"the model's training file {overlap['train_file']}: these metrics are optimistic; evaluate on "
              "held-out labels", file=sys.stderr)
    return 0


def training_overlap(model: Path, texts: list[str]) -> dict | None:
    """How many of `texts` the model was fitted on (train + valid: `train-quality` refits on both once
    the threshold is chosen): MODEL.json names the labels file and seed and the split is redone as in
    training. None when the model has no such record or the file is gone."""
    from filters.quality import read_labels, split
    meta_path = model.with_name(model.name + ".json")
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    train_file = meta.get("labels_file")
    if not isinstance(train_file, str) or not Path(train_file).is_file():
        return None
    train, valid, _ = split(read_labels(train_file), seed=meta.get("seed", 0))
    seen = set(train.texts) | set(valid.texts)
    return {"train_file": train_file, "documents": sum(t in seen for t in texts)}


def cmd_show_config(args) -> int:
    cfg = _load(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    print(f"# config hash: {cfg.hash()}")
    return 0


def _load_train(args):
    from pipelines.training.train_config import load_train_config
    return load_train_config(args.config, args.overrides, output_dir=args.output)


def _print_summary(summary: dict) -> None:
    print(f"{summary['phase']}: {summary['steps']} steps, {summary['tokens']:,} tokens | val loss "
          f"{summary['val_loss']:.4f} (unigram entropy of the data {summary['unigram_entropy']:.4f}) | "
          f"{summary['tokens_per_s']:,.0f} tokens/s")
    print(f"checkpoint: {summary['checkpoint']}")


def cmd_train(args) -> int:
    from pipelines.training.trainer import train
    cfg = _load_train(args)
    args.run_folder = Path(cfg.output_dir)
    _print_summary(train(cfg, "pretrain", resume=args.resume, overwrite=args.overwrite, quiet=args.quiet))
    return 0


def cmd_anneal(args) -> int:
    from pipelines.training.trainer import train
    cfg = _load_train(args)
    if args.output is None:
        cfg.output_dir = cfg.output_dir.rstrip("/") + "-anneal"
    args.run_folder = Path(cfg.output_dir)
    _print_summary(train(cfg, "anneal", init_from=Path(args.init_from).resolve(), resume=args.resume,
                         overwrite=args.overwrite, quiet=args.quiet))
    return 0


def cmd_eval(args) -> int:
    from pipelines.core.run import RunError
    from pipelines.evaluation.harness import DEFAULT_TASKS, aggregate, evaluate_checkpoint
    from pipelines.training.model import load_model
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(DEFAULT_TASKS)
    ckpt = Path(args.checkpoint)
    if not ((ckpt / "model" / "config.json").is_file() or (ckpt / "config.json").is_file()):
        hint = ckpt / "checkpoints"
        raise RunError(f"not a checkpoint: {ckpt} (a checkpoint folder holds model/ and state.pt, e.g. "
                       f"runs/train-local/checkpoints/step_0000300"
                       + (f"; this looks like a training run: pick one in {hint}/" if hint.is_dir() else "") + ")")
    eval_dir = Path(args.eval_dir) if args.eval_dir else None
    check_task_names(tasks, eval_dir)
    local = [t for t in tasks if eval_dir and (eval_dir / f"{t}.jsonl").is_file()]
    others = [t for t in tasks if t not in local]  # lm-evaluation-harness's own tasks
    model = load_model(ckpt, args.device)
    result = evaluate_checkpoint(ckpt, eval_dir, local, Path(args.run) if args.run else None, args.batch_size,
                                 args.limit, args.bpb_sequences, args.seq_len, args.device, model=model)
    if others:  # scored by lm-eval's evaluator through the adapter, with the same model and scorer
        from pipelines.evaluation.lm_eval_adapter import run_lm_eval
        result["tasks"].update(run_lm_eval(ckpt, others, batch_size=args.batch_size, limit=args.limit, model=model))
        result["aggregate"] = aggregate(result["tasks"])
    for task, r in result["tasks"].items():
        norm = f"  acc_norm {r['acc_norm']:.4f} ± {r['acc_norm_stderr']:.4f}" if "acc_norm" in r else ""
        print(f"{task:15s} acc {r['acc']:.4f} ± {r['acc_stderr']:.4f}{norm}  (n={r['n']})")
    for comp, r in result["bpb"].items():
        print(f"bpb {comp:32s} {r['bpb']:.4f} ± {r['bpb_stderr']:.4f}  ({r['bytes']:,} bytes)")
    print(f"aggregate {result['aggregate']['score']:.4f}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.output}")
    return 0


def check_task_names(tasks: list[str], eval_dir: Path | None) -> None:
    """Refuse a task that is neither a local JSONL in `eval_dir` nor known to lm-evaluation-harness
    (before loading any model), suggesting the closest names."""
    from pipelines.core.run import RunError
    local = sorted(p.stem for p in eval_dir.glob("*.jsonl")) if eval_dir and eval_dir.is_dir() else []
    others = [t for t in tasks if t not in local]
    if not others:
        return
    from lm_eval.tasks import TaskManager
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its index of thousands of tasks warns on some
    known = set(TaskManager().all_tasks)
    unknown = [t for t in others if t not in known]
    if unknown:
        t = unknown[0]
        close = difflib.get_close_matches(t, sorted(set(local) | known), 3, 0.75)
        raise RunError(f"--tasks: unknown task {t!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                       + f"; local tasks in {eval_dir}: {', '.join(local) or 'none'}; other names must be "
                       "lm-evaluation-harness tasks (lm-eval ls tasks)")


def cmd_ablate(args) -> int:
    from pipelines.evaluation.ablation import ablate, load_ablation_config
    cfg = load_ablation_config(args.config, args.overrides, output_dir=args.output)
    result = ablate(cfg, quiet=args.quiet)
    out = Path(result["output_dir"])
    print((out / "comparison.md").read_text(), end="")
    print(f"table: {out}/comparison.md, {out}/comparison.csv\nchart: {out}/comparison.png\n"
          f"manifest: {out}/manifest.json")
    return 0


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training YAML, e.g. configs/train-local.yaml (model preset, mixture, schedule)")
    p.add_argument("--output", metavar="DIR", help="run folder; overrides output_dir")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config key, dotted (repeatable): --set steps=500 --set optim.lr=1e-3")
    p.add_argument("--resume", action="store_true", help="continue from the folder's latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run in the folder first")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def cmd_publish(args) -> int:
    from pipelines.release.publish import upload, upload_plan, write_card
    if not args.verbose:  # the Hub client logs every HTTP request at INFO: thousands of lines for a release
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    folder = write_card(Path(args.run_dir), args.repo)
    plan = upload_plan(folder)
    size = sum(f.size for f in plan)
    print(f"card: {folder / 'README.md'}")
    if args.dry_run:
        for f in plan:
            print(f"{f.size:>15,}  {f.path_in_repo}")
        print(f"dry run: would upload {len(plan):,} files ({size:,} bytes) to {'private' if args.private else 'public'} "
              f"dataset {args.repo}; nothing was sent")
        return 0
    url = upload(folder, args.repo, private=args.private)
    print(f"published {len(plan):,} files ({size:,} bytes) to dataset {args.repo}\ncommit: {url}")
    return 0


def cmd_stats(args) -> int:
    from pipelines.release.stats import write_stats
    page = write_stats(Path(args.run_dir), Path(args.output) if args.output else None, sample_docs=args.sample_docs,
                       rows_per_pass=args.rows_per_pass)
    print(f"report: {page}\nplots:  {', '.join(sorted(p.name for p in page.parent.glob('*.png')))}")
    return 0


def cmd_reroot_blends(args) -> int:
    from pipelines.tokens.shards import reroot_blends
    for path in reroot_blends(Path(args.run_dir), args.root):
        print(path)
    return 0


def cmd_submit(args) -> int:
    from jobs.submit import env_vars, job_args, submit
    from pipelines.core.run import RunError
    cfg = _load(args)
    run_args = job_args(cfg, args.config, source_overrides(args.sources) + list(args.overrides),
                        ["--resume"] * args.resume + ["--overwrite"] * args.overwrite
                        + ["--allow-empty"] * args.allow_empty)
    env = env_vars(args.env)
    if args.kuberay:
        from jobs.kuberay import rayjob, write_rayjob
        if not args.working_dir_uri:
            raise RunError("--kuberay needs --working-dir-uri: pods cannot see this folder; upload a zip of it "
                           "(git archive -o zyda2.zip HEAD) to https/s3/gs and give its URI")
        write_rayjob(args.kuberay, rayjob(cfg, run_args, args.working_dir_uri, env, python=args.python))
        print(f"wrote {args.kuberay}; start it with: kubectl apply -f {args.kuberay}")
        return 0
    if not args.address:
        raise RunError("give the cluster's job server with --address http://HEAD:8265 (or set RAY_ADDRESS)")
    return submit(cfg, run_args, args.address, env, python=args.python, wait=not args.no_wait)


EXAMPLES = {
    "run": """examples:
  python zyda2.py run configs/local.yaml --output runs/mine             # whole pipeline on the shared fixtures
  python zyda2.py run configs/local.yaml --output runs/mine --plan      # list inputs, stages, outputs; run nothing
  python zyda2.py run configs/local.yaml --output runs/mine --sources dclm,zyda   # a subset of the sources
  python zyda2.py run configs/local.yaml --output runs/mine --resume    # finish an interrupted run""",
    "dedup": """example:
  python zyda2.py dedup runs/local --output runs/local-b16 --set dedup.bands=16 --set dedup.rows=8""",
    "train-quality": """examples:
  python zyda2.py train-quality ../shared/data/quality/labels.jsonl --output runs/models/quality-fasttext.ftz
  python zyda2.py train-quality --positive good/ --negative bad/ --output runs/models/mine.ftz""",
    "eval-quality": """example (use labels the model was not trained on; an overlap is warned about):
  python zyda2.py eval-quality runs/models/quality-fasttext.ftz heldout.jsonl""",
    "train": """examples:
  python zyda2.py train configs/train-local.yaml                        # tiny Zamba2 on runs/local's shards
  python zyda2.py train configs/train-local.yaml --set steps=500 --resume""",
    "anneal": """example:
  python zyda2.py anneal configs/train-local.yaml --from runs/train-local/checkpoints/step_0000300""",
    "publish": """example:
  python zyda2.py publish runs/local --repo ORG/NAME --dry-run""",
    "submit": """examples:
  python zyda2.py submit configs/zyda2.yaml --address http://HEAD:8265 --output /shared/zyda2
  python zyda2.py submit configs/zyda2.yaml --kuberay rayjob.yaml --working-dir-uri s3://bucket/zyda2.zip""",
    "eval": """example:
  python zyda2.py eval runs/train-local/checkpoints/step_0000300 --run runs/local --tasks arc_easy,piqa""",
    "ablate": """example:
  python zyda2.py ablate configs/ablate-local.yaml --set seeds=[0,1]""",
    "show-config": """example:
  python zyda2.py show-config configs/local.yaml --set dedup.bands=16 --set dedup.rows=8""",
    "stats": """example:
  python zyda2.py stats runs/local                                      # runs/local/stats/report.html""",
    "reroot-blends": """examples:
  python zyda2.py reroot-blends /data/zyda2                 # after moving the run folder to /data/zyda2
  python zyda2.py reroot-blends runs/local --root /mnt/zyda2 # the same run, mounted elsewhere for training""",
}


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, a suggestion for a mistyped choice, and exit code 2."""

    def error(self, message: str):
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2))
            close = difflib.get_close_matches(m.group(1), choices, 1)
            message = message[:m.start()] + f"invalid choice: {m.group(1)!r}" + (
                f" (did you mean {close[0]}?)" if close else f" (choose from {', '.join(choices)})")
        m = re.match(r"unrecognized arguments: (--?[\w-]+)", message)
        if m:
            options = {o for a in self._actions for o in a.option_strings}
            for a in self._actions:
                for sub in (a.choices or {}).values() if isinstance(a.choices, dict) else ():
                    options |= {o for b in sub._actions for o in b.option_strings}
            close = difflib.get_close_matches(m.group(1), sorted(options), 1)
            message += f" (did you mean {close[0]}?)" if close else ""
        self.exit(2, f"zyda2: error: {self.prog}: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zyda2.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)

    class _Sub:
        """add_parser with the command's examples as epilog and -v accepted after the command too."""

        def add_parser(self, name, **kwargs):
            p = subparsers.add_parser(name, epilog=EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter,
                                      **kwargs)
            p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
            return p

    sub = _Sub()

    p = sub.add_parser("run", help="run the stage graph: ingest -> filters -> dedup -> quality -> tokenize -> shards")
    _add_config_args(p)
    g = p.add_argument_group("run folder")
    g.add_argument("--resume", action="store_true", help="finish an interrupted run in --output, skipping done work")
    g.add_argument("--overwrite", action="store_true", help="delete an existing run in --output first")
    g.add_argument("--allow-empty", action="store_true", help="go on when a source has no input file or ingests "
                   "no document (default: an error naming the source)")
    p.add_argument("--plan", action="store_true", help="dry run: list the input files per source, the stages and "
                   "the outputs, and stop")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display (CI)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dedup", help="re-run cross-dedup with other parameters on an existing run's ingest "
                                     "output, reusing its cached signatures")
    p.add_argument("run_dir", help="a finished or partial run folder (with manifest.json and ingest/)")
    p.add_argument("--output", required=True, metavar="DIR", help="new folder for decisions and report")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="dedup parameters to change, e.g. --set dedup.bands=9 --set dedup.rows=13")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--resume", action="store_true", help="finish an interrupted dedup in --output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_dedup)

    p = sub.add_parser("train-quality", help="train a fastText quality classifier from labelled documents")
    p.add_argument("labels", nargs="?", help="JSONL with 'text' and 'label' (good|bad), e.g. "
                   "../shared/data/quality/labels.jsonl")
    p.add_argument("--positive", metavar="DIR", help="folder of good *.txt documents (instead of LABELS)")
    p.add_argument("--negative", metavar="DIR", help="folder of bad *.txt documents (instead of LABELS)")
    p.add_argument("--output", required=True, metavar="MODEL", help="model file (.ftz); MODEL.json gets the "
                   "threshold chosen on validation data and held-out test metrics")
    p.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    p.add_argument("--no-quantize", action="store_true", help="keep the full-size model")
    p.set_defaults(func=cmd_train_quality)

    p = sub.add_parser("eval-quality", help="JSON metrics (accuracy, precision, recall, F1, ROC AUC) of a "
                       "quality model on labelled documents")
    p.add_argument("model", help="fastText model file, or DeBERTa model folder / Hub id")
    p.add_argument("labels", help="JSONL with 'text' and 'label' (good|bad)")
    p.add_argument("--threshold", type=float, help="fastText P(good) cut (default: the model's own)")
    p.add_argument("--keep-labels", default="High", help="labels counted as good (default High)")
    p.add_argument("--device", default="auto", help="DeBERTa device: auto, cpu, cuda (default auto)")
    p.set_defaults(func=cmd_eval_quality)

    p = sub.add_parser("train", help="pretrain a Zamba2 model on a run's token shards (a weighted mixture)")
    _add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("anneal", help="anneal a checkpoint: re-warm the LR to a fraction of peak, decay to 0 "
                                      "on the anneal mixture (with replay)")
    _add_train_args(p)
    p.add_argument("--from", required=True, dest="init_from", metavar="CKPT",
                   help="pretraining checkpoint folder (.../checkpoints/step_NNNNNNN)")
    p.set_defaults(func=cmd_anneal)

    p = sub.add_parser("publish", help="write the dataset card into RUN_DIR/publish and upload that folder to a "
                                       "Hub dataset repo (resumable: run it again after an interruption)")
    p.add_argument("run_dir", help="a finished run folder (with report.json and publish/data/)")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="dataset repo id; created if missing")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps "
                   "its visibility)")
    p.add_argument("--dry-run", action="store_true", help="write the card and list the files and bytes that "
                   "would be uploaded; no network")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("submit", help="run the pipeline as a Ray job on a running cluster (uploads this folder "
                       "as the working_dir, streams the logs), or write a KubeRay RayJob manifest")
    _add_config_args(p)
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), metavar="URL",
                   help="the head's job server, e.g. http://HEAD:8265 (default $RAY_ADDRESS)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return instead of following logs")
    p.add_argument("--resume", action="store_true", help="the job finishes an interrupted run in --output")
    p.add_argument("--overwrite", action="store_true", help="the job replaces an existing run in --output")
    p.add_argument("--allow-empty", action="store_true", help="the job goes on when a source has no input file or "
                   "ingests no document (as run --allow-empty)")
    p.add_argument("--env", metavar="NAME=VALUE", action="append", default=[],
                   help="environment variable of the job (repeatable; credentials are refused: give the nodes "
                        "their own)")
    p.add_argument("--python", default="python", help="the cluster's Python that runs zyda2.py (default python)")
    p.add_argument("--kuberay", metavar="OUT.yaml", help="write a KubeRay RayJob (sized from ray.cluster) instead "
                   "of submitting")
    p.add_argument("--working-dir-uri", metavar="URI", help="with --kuberay: zip of this repository on "
                   "https/s3/gs, the job's working_dir")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("eval", help="score a checkpoint on multiple-choice tasks (log-likelihood, lm-eval "
                                    "definitions) and bits per byte on a run's validation shards")
    p.add_argument("checkpoint", help="checkpoint folder (.../checkpoints/step_NNNNNNN)")
    p.add_argument("--tasks", help="comma-separated; local JSONL tasks in --eval-dir, any other name goes to "
                   "lm-evaluation-harness (default: arc_easy,arc_challenge,piqa,winogrande,openbookqa,hellaswag)")
    p.add_argument("--eval-dir", default=os.environ.get("ZYDA2_DATA", "../shared/data") + "/eval",
                   help="folder of <task>.jsonl files (default $ZYDA2_DATA/eval)")
    p.add_argument("--run", metavar="RUN_DIR", help="pipeline run whose per-component val shards get bits per byte")
    p.add_argument("--limit", type=int, help="items per task (default all)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default 16; lower it "
                   "if memory runs out)")
    p.add_argument("--seq-len", type=int, default=256, help="window for bits per byte (default 256)")
    p.add_argument("--bpb-sequences", type=int, default=64, help="windows per component (default 64)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--output", metavar="JSON", help="write all results (with per-item correctness) here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("ablate", help="annealing ablation: anneal one checkpoint on each candidate dataset over "
                                      "seeds, evaluate, compare with a paired test (table, CSV, chart)")
    p.add_argument("config", help="ablation YAML, e.g. configs/ablate-local.yaml")
    p.add_argument("--output", metavar="DIR", help="overrides output_dir")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config key, dotted (repeatable): --set seeds=[0,1,2]")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("show-config", help="print the fully resolved, validated config and its hash")
    _add_config_args(p)
    p.set_defaults(func=cmd_show_config)

    p = sub.add_parser("stats", help="self-contained HTML report (and PNGs) of a finished run: documents and "
                                     "tokens per stage, dedup clusters and overlap, quality scores, mixtures, "
                                     "throughput")
    p.add_argument("run_dir", help="a finished run folder (with report.json and manifest.json)")
    p.add_argument("--output", metavar="DIR", help="where report.html and the PNGs go (default RUN_DIR/stats)")
    p.add_argument("--sample-docs", type=int, default=200_000, metavar="N",
                   help="score distributions read every k-th file, at most about N documents per source "
                        "(default 200000)")
    p.add_argument("--rows-per-pass", type=int, default=5_000_000, metavar="N",
                   help="dedup decision rows aggregated at once (about 1.2 GB per 5M); more rows take more "
                        "passes over dedup/decisions (default 5000000)")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("reroot-blends", help="rewrite a run's Megatron blend files (shards/blends/*.txt) with "
                                             "absolute prefixes under a new root, after moving or uploading it")
    p.add_argument("run_dir", help="a finished run folder (with shards/blends/*.json)")
    p.add_argument("--root", help="the run folder's path as the training nodes see it (default: RUN_DIR here)")
    p.set_defaults(func=cmd_reroot_blends)
    return parser


def command_line(argv: list[str] | None) -> list[str]:
    """The command as typed (interpreter included) when run from a shell; `python zyda2.py ARGS` when
    `main` is called with explicit arguments (tests)."""
    if argv is None and getattr(sys, "orig_argv", None) and any(a.endswith("zyda2.py") for a in sys.orig_argv):
        return list(sys.orig_argv)
    return ["python", "zyda2.py", *(sys.argv[1:] if argv is None else argv)]


def resume_command(cmd: list[str]) -> str:
    """`cmd` with --overwrite dropped and --resume added: what finishes an interrupted run."""
    out = [a for a in cmd if a != "--overwrite"]
    if "--resume" not in out:
        out.append("--resume")
    return shlex.join(out)


RESUMABLE = {"run", "train", "anneal", "dedup"}


def interrupt_message(args, signum: int) -> str:
    """One line: which signal, what is finished, and the command that goes on from there."""
    from pipelines.core.outputs import read_json
    name = signal.Signals(signum).name
    folder: Path | None = getattr(args, "run_folder", None)
    done = ""
    if folder is not None and (folder / "manifest.json").is_file() and args.command in ("run", "dedup"):
        from pipelines.core.graph import STAGES
        try:
            stages = read_json(folder / "manifest.json").get("stages", {})
        except (OSError, ValueError):
            stages = {}
        order = [s.name for s in STAGES]
        stages = dict(sorted(stages.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        finished = [s for s, st in stages.items() if isinstance(st, dict) and st.get("status") == "done"]
        cut = [s for s, st in stages.items() if isinstance(st, dict) and st.get("status") == "interrupted"]
        parts = []
        for s in cut:
            markers = folder / s / "_done"
            n = len(list(markers.glob("*.json"))) if markers.is_dir() else 0
            parts.append(f"{s} stopped with {n} partitions done")
        done = (f"finished stages: {', '.join(finished) or 'none'}" + (f"; {'; '.join(parts)}" if parts else "")
                + f" (in {folder})")
    elif folder is not None and args.command in ("train", "anneal"):
        from pipelines.training.trainer import latest_checkpoint
        ckpt = latest_checkpoint(folder) if folder.is_dir() else None
        done = f"last checkpoint: {ckpt}" if ckpt else f"no checkpoint yet in {folder}"
    else:
        done = "nothing to keep"
    if args.command in RESUMABLE:
        return f"zyda2: interrupted by {name}; {done}; resume with: {resume_command(args.command_line)}"
    if args.command == "publish":
        return f"zyda2: interrupted by {name}; the upload resumes where it stopped: {shlex.join(args.command_line)}"
    if args.command == "submit":
        return (f"zyda2: interrupted by {name}; a job already submitted keeps running on the cluster "
                f"(ray job list --address {args.address})")
    return f"zyda2: interrupted by {name}; {done}; run the same command again to start over"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = command_line(argv)
    args.run_folder = None
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _received.clear()
    handlers = install_signal_handlers()
    from jobs.submit import SubmitError
    from pipelines.core.report import AccountingError
    from pipelines.core.run import RunError
    from pipelines.release.publish import PublishError
    from pipelines.core.sources import SourceAccessError
    from pipelines.release.stats_data import StatsError
    from pipelines.training import TrainError
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        signum = _received[0] if _received else getattr(e, "signum", signal.SIGINT)
        print(interrupt_message(args, signum), file=sys.stderr, flush=True)
        return 128 + signum
    except (ConfigError, RunError, AccountingError, FileNotFoundError, SourceAccessError, TrainError,
            PublishError, StatsError, SubmitError) as e:
        print(f"zyda2: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # an environment without the project's dependencies
        print(f"zyda2: error: Python module {e.name!r} is missing: run with the project's environment "
              f"(.venv/bin/python zyda2.py ..., after `make install`), not {sys.executable}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print(f"zyda2: error: disk full writing {e.filename or 'outputs'}; free space or choose another "
                  "--output (then --resume)", file=sys.stderr)
            return 2
        _report_bug(args)
        raise
    except Exception:
        _report_bug(args)
        raise
    finally:
        if handlers:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _report_bug(args) -> None:
    """An unexpected exception is a bug: its traceback goes to the run folder's log too, and a last
    line says where (the traceback itself follows from Python)."""
    folder: Path | None = args.run_folder
    if folder is not None and folder.is_dir():
        path = folder / "logs" / "error.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(f"$ {shlex.join(args.command_line)}\n{traceback.format_exc()}\n")
        print(f"zyda2: internal error (a bug, please report it); traceback below and in {path}", file=sys.stderr)
    else:
        print("zyda2: internal error (a bug, please report it); traceback below", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
