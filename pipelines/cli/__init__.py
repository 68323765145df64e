"""The commands of `zyda2.py`: each `cmd_*` turns parsed arguments into calls of the library and
prints what the user sees. `zyda2.py` keeps the parser, the signal handling and the error lines.

  pipeline   run (with --plan and the run summary), dedup, show-config, reroot-blends, submit
  quality    train-quality, eval-quality
  models     train, anneal, eval (local tasks and lm-evaluation-harness tasks)
  ablate     ablate: one Ray task per candidate and seed (anneal, then evaluate), then the comparison
  release    publish, stats
  common     what several commands share: CommandError, --sources, loading the run config
  examples   the examples at the end of every command's --help

The heavy imports (Ray, torch, the stages) happen inside the commands, so `--help` stays fast.
"""
