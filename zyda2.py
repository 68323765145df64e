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
    from pipelines.cli import ablate, models, pipeline, quality, release
    from pipelines.cli.common import CommandError
    from pipelines.cli.examples import EXAMPLES
    from pipelines.core.config import SOURCE_NAMES, ConfigError
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


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="training YAML, e.g. configs/train-local.yaml (model preset, mixture, schedule)")
    p.add_argument("--output", metavar="DIR", help="run folder; overrides output_dir")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config key, dotted (repeatable): --set steps=500 --set optim.lr=1e-3")
    p.add_argument("--resume", action="store_true", help="continue from the folder's latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run in the folder first")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


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
    p.set_defaults(func=pipeline.cmd_run)

    p = sub.add_parser("dedup", help="re-run cross-dedup with other parameters on an existing run's ingest "
                                     "output, reusing its cached signatures")
    p.add_argument("run_dir", help="a finished or partial run folder (with manifest.json and ingest/)")
    p.add_argument("--output", required=True, metavar="DIR", help="new folder for decisions and report")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="dedup parameters to change, e.g. --set dedup.bands=9 --set dedup.rows=13")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--resume", action="store_true", help="finish an interrupted dedup in --output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=pipeline.cmd_dedup)

    p = sub.add_parser("train-quality", help="train a fastText quality classifier from labelled documents")
    p.add_argument("labels", nargs="?", help="JSONL with 'text' and 'label' (good|bad), e.g. "
                   "../shared/data/quality/labels.jsonl")
    p.add_argument("--positive", metavar="DIR", help="folder of good *.txt documents (instead of LABELS)")
    p.add_argument("--negative", metavar="DIR", help="folder of bad *.txt documents (instead of LABELS)")
    p.add_argument("--output", required=True, metavar="MODEL", help="model file (.ftz); MODEL.json gets the "
                   "threshold chosen on validation data and held-out test metrics")
    p.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    p.add_argument("--no-quantize", action="store_true", help="keep the full-size model")
    p.set_defaults(func=quality.cmd_train_quality)

    p = sub.add_parser("eval-quality", help="JSON metrics (accuracy, precision, recall, F1, ROC AUC) of a "
                       "quality model on labelled documents")
    p.add_argument("model", help="fastText model file, or DeBERTa model folder / Hub id")
    p.add_argument("labels", help="JSONL with 'text' and 'label' (good|bad)")
    p.add_argument("--threshold", type=float, help="fastText P(good) cut (default: the model's own)")
    p.add_argument("--keep-labels", default="High", help="labels counted as good (default High)")
    p.add_argument("--device", default="auto", help="DeBERTa device: auto, cpu, cuda (default auto)")
    p.set_defaults(func=quality.cmd_eval_quality)

    p = sub.add_parser("train", help="pretrain a Zamba2 model on a run's token shards (a weighted mixture)")
    _add_train_args(p)
    p.set_defaults(func=models.cmd_train)

    p = sub.add_parser("anneal", help="anneal a checkpoint: re-warm the LR to a fraction of peak, decay to 0 "
                                      "on the anneal mixture (with replay)")
    _add_train_args(p)
    p.add_argument("--from", required=True, dest="init_from", metavar="CKPT",
                   help="pretraining checkpoint folder (.../checkpoints/step_NNNNNNN)")
    p.set_defaults(func=models.cmd_anneal)

    p = sub.add_parser("publish", help="write the dataset card into RUN_DIR/publish and upload that folder to a "
                                       "Hub dataset repo (resumable: run it again after an interruption)")
    p.add_argument("run_dir", help="a finished run folder (with report.json and publish/data/)")
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="dataset repo id; created if missing")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps "
                   "its visibility)")
    p.add_argument("--dry-run", action="store_true", help="write the card and list the files and bytes that "
                   "would be uploaded; no network")
    p.set_defaults(func=release.cmd_publish)

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
    p.set_defaults(func=pipeline.cmd_submit)

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
    p.set_defaults(func=models.cmd_eval)

    p = sub.add_parser("ablate", help="annealing ablation: anneal one checkpoint on each candidate dataset over "
                                      "seeds, evaluate, compare with a paired test (table, CSV, chart)")
    p.add_argument("config", help="ablation YAML, e.g. configs/ablate-local.yaml")
    p.add_argument("--output", metavar="DIR", help="overrides output_dir")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config key, dotted (repeatable): --set seeds=[0,1,2]")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=ablate.cmd_ablate)

    p = sub.add_parser("show-config", help="print the fully resolved, validated config and its hash")
    _add_config_args(p)
    p.set_defaults(func=pipeline.cmd_show_config)

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
    p.set_defaults(func=release.cmd_stats)

    p = sub.add_parser("reroot-blends", help="rewrite a run's Megatron blend files (shards/blends/*.txt) with "
                                             "absolute prefixes under a new root, after moving or uploading it")
    p.add_argument("run_dir", help="a finished run folder (with shards/blends/*.json)")
    p.add_argument("--root", help="the run folder's path as the training nodes see it (default: RUN_DIR here)")
    p.set_defaults(func=pipeline.cmd_reroot_blends)
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
        from pipelines.pipeline import PIPELINE
        try:
            stages = read_json(folder / "manifest.json").get("stages", {})
        except (OSError, ValueError):
            stages = {}
        order = list(PIPELINE.names)
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
    from pipelines.ingest.remote import SourceAccessError
    from pipelines.release.publish import PublishError
    from pipelines.release.stats_data import StatsError
    from pipelines.training import TrainError
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        signum = _received[0] if _received else getattr(e, "signum", signal.SIGINT)
        print(interrupt_message(args, signum), file=sys.stderr, flush=True)
        return 128 + signum
    except (ConfigError, CommandError, RunError, AccountingError, FileNotFoundError, SourceAccessError, TrainError,
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
