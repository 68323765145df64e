"""`train`, `anneal` and `eval`: the Zamba2 trainer and the evaluation of a checkpoint."""

from __future__ import annotations

import difflib
import json
import logging
from pathlib import Path

from pipelines.cli.common import CommandError


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
    from pipelines.evaluation.harness import DEFAULT_TASKS, aggregate, evaluate_checkpoint
    from pipelines.training.model import load_model
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else list(DEFAULT_TASKS)
    ckpt = Path(args.checkpoint)
    if not ((ckpt / "model" / "config.json").is_file() or (ckpt / "config.json").is_file()):
        hint = ckpt / "checkpoints"
        raise CommandError(f"not a checkpoint: {ckpt} (a checkpoint folder holds model/ and state.pt, e.g. "
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
        raise CommandError(f"--tasks: unknown task {t!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                           + f"; local tasks in {eval_dir}: {', '.join(local) or 'none'}; other names must be "
                           "lm-evaluation-harness tasks (lm-eval ls tasks)")
