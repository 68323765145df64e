"""Training Zamba2 on the pipeline's shards: `presets` (model shapes), `model` (build and load),
`train_config` (YAML -> dataclasses), `token_stream` (packed sequences from a weighted mixture),
`schedule` (LR functions), `curves` (loss plot), `trainer` (the loop, checkpoints, resume).

`TrainError` is defined here rather than in one of those modules so that each of them can raise it
without importing another (which would make the import chains deeper).
"""


class TrainError(RuntimeError):
    """A training run cannot start or continue (stale folder, missing checkpoint, bad mixture)."""
