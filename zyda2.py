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
import errno
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from pipelines.config import ConfigError, load_config


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config, e.g. configs/local.yaml (the local default) or configs/zyda2.yaml")
    p.add_argument("--input", metavar="DIR", help="folder laid out like ../shared/data/sources "
                   "(dclm/, fineweb-edu/, zyda/, dolma-cc/): every source is read from there (a source given "
                   "as a URL from DIR/<its folder>); refused for a source with an absolute local path")
    p.add_argument("--output", metavar="DIR", help="run folder; overrides output_dir")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config key, dotted (repeatable): --set ingest.batch_docs=512")


def _load(args):
    return load_config(args.config, args.overrides, input_dir=args.input, output_dir=args.output)


def cmd_run(args) -> int:
    from pipelines.runner import run_pipeline
    cfg = _load(args)
    report = run_pipeline(cfg, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    t = report["totals"]
    print(f"read {t['read']:,} docs: kept {t['kept']:,}, removed {t['removed']:,}, "
          f"quarantined {t['quarantined']:,}")
    print(f"outputs: {cfg.output_dir}\nreport:  {cfg.output_dir}/report.json")
    return 0


def cmd_dedup(args) -> int:
    from pipelines.runner import rerun_dedup
    report = rerun_dedup(Path(args.run_dir), args.overrides, Path(args.output), quiet=args.quiet,
                         overwrite=args.overwrite)
    for source, r in report["sources"].items():
        d = r["stages"]["dedup"]
        print(f"{source:9s} in {d['in']:>9,}  removed {sum(d['removed'].values()):>9,}  "
              f"clusters {d.get('clusters', 0):>8,}  largest {d.get('largest_cluster', 0):>5,}")
    print(f"decisions: {args.output}/dedup/decisions/\nreport:    {args.output}/report.json")
    return 0


def cmd_train_quality(args) -> int:
    from filters.quality import read_folders, read_labels, train_fasttext
    if args.labels:
        data = read_labels(args.labels)
    elif args.positive and args.negative:
        data = read_folders(args.positive, args.negative)
    else:
        raise SystemExit("zyda2.py train-quality: give LABELS.jsonl, or --positive DIR and --negative DIR")
    report = train_fasttext(data, args.output, seed=args.seed, quantize=not args.no_quantize)
    print(json.dumps(report, indent=2))
    return 0


def cmd_eval_quality(args) -> int:
    import numpy as np

    from filters.quality import load_classifier, metrics, read_labels
    from pipelines.config import QualityFilterConfig
    backend = "deberta" if Path(args.model).is_dir() or not Path(args.model).exists() else "fasttext"
    cfg = QualityFilterConfig(backend=backend, model=args.model, threshold=args.threshold, device=args.device,
                              keep_labels=args.keep_labels.split(","))
    model = load_classifier(cfg)
    data = read_labels(args.labels)
    preds, prob_high = model.predict(data.texts)
    result = {"model": args.model, "backend": backend, "labels": args.labels,
              **metrics(data.good, np.isin(preds, cfg.keep_labels), prob_high)}
    print(json.dumps(result, indent=2))
    return 0


def cmd_show_config(args) -> int:
    cfg = _load(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    print(f"# config hash: {cfg.hash()}")
    return 0


def _load_train(args):
    from pipelines.train_config import load_train_config
    return load_train_config(args.config, args.overrides, output_dir=args.output)


def _print_summary(summary: dict) -> None:
    print(f"{summary['phase']}: {summary['steps']} steps, {summary['tokens']:,} tokens | val loss "
          f"{summary['val_loss']:.4f} (unigram entropy of the data {summary['unigram_entropy']:.4f}) | "
          f"{summary['tokens_per_s']:,.0f} tokens/s")
    print(f"checkpoint: {summary['checkpoint']}")


def cmd_train(args) -> int:
    from pipelines.trainer import train
    cfg = _load_train(args)
    _print_summary(train(cfg, "pretrain", resume=args.resume, overwrite=args.overwrite, quiet=args.quiet))
    return 0


def cmd_anneal(args) -> int:
    from pipelines.trainer import train
    cfg = _load_train(args)
    if args.output is None:
        cfg.output_dir = cfg.output_dir.rstrip("/") + "-anneal"
    _print_summary(train(cfg, "anneal", init_from=Path(args.init_from).resolve(), resume=args.resume,
                         overwrite=args.overwrite, quiet=args.quiet))
    return 0


def cmd_eval(args) -> int:
    from pipelines.evaluation import DEFAULT_TASKS, evaluate_checkpoint
    tasks = args.tasks.split(",") if args.tasks else list(DEFAULT_TASKS)
    result = evaluate_checkpoint(Path(args.checkpoint), Path(args.eval_dir) if args.eval_dir else None, tasks,
                                 Path(args.run) if args.run else None, args.batch_size, args.limit,
                                 args.bpb_sequences, args.seq_len, args.device)
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


def cmd_ablate(args) -> int:
    from pipelines.ablation import ablate, load_ablation_config
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
    from pipelines.publish import upload, upload_plan, write_card
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
    from pipelines.stats import write_stats
    page = write_stats(Path(args.run_dir), Path(args.output) if args.output else None, sample_docs=args.sample_docs,
                       rows_per_pass=args.rows_per_pass)
    print(f"report: {page}\nplots:  {', '.join(sorted(p.name for p in page.parent.glob('*.png')))}")
    return 0


def cmd_reroot_blends(args) -> int:
    from pipelines.shards import reroot_blends
    for path in reroot_blends(Path(args.run_dir), args.root):
        print(path)
    return 0


def cmd_submit(args) -> int:
    from jobs.submit import env_vars, job_args, submit
    from pipelines.runner import RunError
    cfg = _load(args)
    run_args = job_args(cfg, args.config, args.overrides,
                        ["--resume"] * args.resume + ["--overwrite"] * args.overwrite)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zyda2.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the stage graph: ingest -> filters -> dedup -> quality -> tokenize -> shards")
    _add_config_args(p)
    g = p.add_argument_group("run folder")
    g.add_argument("--resume", action="store_true", help="finish an interrupted run in --output, skipping done work")
    g.add_argument("--overwrite", action="store_true", help="delete an existing run in --output first")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display (CI)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dedup", help="re-run cross-dedup with other parameters on an existing run's ingest "
                                     "output, reusing its cached signatures")
    p.add_argument("run_dir", help="a finished or partial run folder (with manifest.json and ingest/)")
    p.add_argument("--output", required=True, metavar="DIR", help="new folder for decisions and report")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="dedup parameters to change, e.g. --set dedup.bands=9 --set dedup.rows=13")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
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
    p.add_argument("--batch-size", type=int, default=16)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipelines.report import AccountingError
    from pipelines.runner import RunError
    from pipelines.publish import PublishError
    from pipelines.sources import SourceAccessError
    from pipelines.stats import StatsError
    from pipelines.train_config import TrainError
    try:
        return args.func(args)
    except (ConfigError, RunError, AccountingError, FileNotFoundError, SourceAccessError, TrainError,
            PublishError, StatsError) as e:
        print(f"zyda2: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print(f"zyda2: error: disk full writing {e.filename or 'outputs'}; free space or choose another "
                  "--output (then --resume)", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
