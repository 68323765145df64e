#!/usr/bin/env python3
"""zyda2: rebuild the Zyda-2 pretraining dataset on Ray.

  python zyda2.py run configs/local.yaml                 # whole pipeline on the shared fixtures
  python zyda2.py run configs/zyda2.yaml --output /data/zyda2 --resume
  python zyda2.py show-config configs/local.yaml --set dedup.bands=16 --set dedup.rows=8
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

import yaml

from pipelines.config import ConfigError, load_config


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config, e.g. configs/local.yaml (the local default) or configs/zyda2.yaml")
    p.add_argument("--input", metavar="DIR", help="folder laid out like ../shared/data/sources "
                   "(dclm/, fineweb-edu/, zyda/, dolma-cc/); overrides input_dir")
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

    p = sub.add_parser("show-config", help="print the fully resolved, validated config and its hash")
    _add_config_args(p)
    p.set_defaults(func=cmd_show_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipelines.report import AccountingError
    from pipelines.runner import RunError
    from pipelines.sources import SourceAccessError
    try:
        return args.func(args)
    except (ConfigError, RunError, AccountingError, FileNotFoundError, SourceAccessError) as e:
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
