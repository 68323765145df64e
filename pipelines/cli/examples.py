"""The examples that end every command's --help (the parser requires one per command)."""

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
