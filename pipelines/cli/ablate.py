"""`ablate`: anneal one checkpoint on each candidate dataset over seeds, evaluate, compare.

Each (candidate, seed) is one Ray task that anneals (`pipelines.training.trainer`) and evaluates
(`pipelines.evaluation.harness`) and leaves `eval.json` in its folder; the base checkpoint is
evaluated once as "(base)". A task whose `eval.json` exists returns it, so running the command again
finishes an interrupted ablation. The config, the statistics and the outputs are in
`pipelines.evaluation.ablation`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from pipelines.evaluation.ablation import AblationConfig


def cmd_ablate(args) -> int:
    from pipelines.evaluation.ablation import load_ablation_config
    cfg = load_ablation_config(args.config, args.overrides, output_dir=args.output)
    result = ablate(cfg, quiet=args.quiet)
    out = Path(result["output_dir"])
    print((out / "comparison.md").read_text(), end="")
    print(f"table: {out}/comparison.md, {out}/comparison.csv\nchart: {out}/comparison.png\n"
          f"manifest: {out}/manifest.json")
    return 0


def anneal_and_evaluate(cfg_dict: dict, candidate: str | None, seed: int, out: str) -> dict:
    """One Ray task: anneal the base checkpoint on one candidate with one data seed, then evaluate."""
    import torch

    from pipelines.core.config import _build
    from pipelines.core.outputs import write_text
    from pipelines.evaluation.ablation import AblationConfig, anneal_mixture
    from pipelines.evaluation.harness import evaluate_checkpoint
    from pipelines.training.train_config import load_train_config
    from pipelines.training.trainer import train
    cfg = _build(AblationConfig, cfg_dict, "")
    threads = max(1, int(cfg.cpus_per_run))
    torch.set_num_threads(threads)
    out = Path(out)
    if (out / "eval.json").is_file():
        return json.loads((out / "eval.json").read_text())
    device = "cuda" if cfg.gpus_per_run > 0 and torch.cuda.is_available() else "cpu"
    tcfg = load_train_config(cfg.train_config, cfg.train_overrides)
    if candidate is None:
        checkpoint = Path(cfg.base_checkpoint)
    else:
        tcfg.output_dir = str(out / "anneal")
        tcfg.anneal.mixture = anneal_mixture(cfg, candidate)
        tcfg.data.seed = seed
        tcfg.threads = threads
        tcfg.device = device
        summary = train(tcfg, "anneal", init_from=Path(cfg.base_checkpoint), resume=True, quiet=True)
        checkpoint = Path(summary["checkpoint"])
    result = evaluate_checkpoint(checkpoint, Path(cfg.eval.eval_dir), cfg.eval.tasks, Path(tcfg.data.val_run),
                                 cfg.eval.batch_size, cfg.eval.limit, cfg.eval.bpb_sequences, tcfg.data.seq_len,
                                 device, quiet=True)
    result.update(candidate=candidate, seed=seed)
    write_text(out / "eval.json", json.dumps(result) + "\n")
    return result


def ablate(cfg: AblationConfig, quiet: bool = False) -> dict:
    """Run (or finish) every anneal and evaluation, then write the comparison table, chart and manifest."""
    import ray

    from pipelines.core.run import ray_session
    from pipelines.evaluation.ablation import write_comparison
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    cfg_dict = dataclasses.asdict(cfg)
    jobs = [(None, None)] + [(c, s) for c in cfg.candidates for s in cfg.seeds]
    with ray_session(cfg):
        task = ray.remote(anneal_and_evaluate).options(num_cpus=cfg.cpus_per_run, num_gpus=cfg.gpus_per_run,
                                                       max_retries=1)
        refs = {}
        for cand, seed in jobs:
            folder = out / "base" if cand is None else out / "runs" / cand / f"seed_{seed}"
            refs[task.remote(cfg_dict, cand, seed if seed is not None else 0, str(folder))] = (cand, seed)
        results: dict[str, list[dict]] = {}
        pending, done = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            cand, seed = refs[ready[0]]
            r = ray.get(ready[0])
            done += 1
            if not quiet:
                print(f"[ablate] {done}/{len(jobs)} {'base checkpoint' if cand is None else f'{cand} seed {seed}'}: "
                      f"aggregate {r['aggregate']['score']:.4f}", file=sys.stderr, flush=True)
            results.setdefault("(base)" if cand is None else cand, []).append(r)
    return {"rows": write_comparison(cfg, results), "output_dir": str(out)}
