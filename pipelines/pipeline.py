"""The Zyda-2 pipeline: its stages, in order, and the entry points that run it.

  ingest -> heuristic_filter -> dedup -> quality_filter -> tokenize -> shards

Every other list of stages derives from `PIPELINE`. Adding a stage is one class
(pipelines/core/stage.py) and one line here, or, without editing this file,
`run_pipeline(cfg, pipeline=PIPELINE.with_stage(MyStage(), after="dedup"))`.
"""

from __future__ import annotations

from pathlib import Path

from dedup.stage import DedupStage
from filters.stage import HeuristicFilterStage, QualityFilterStage
from pipelines.core import run as runner
from pipelines.core.config import Config, config_from_dict
from pipelines.core.outputs import read_json
from pipelines.core.stage import Pipeline, RunError
from pipelines.ingest.stage import IngestStage
from pipelines.tokens.shards import ShardsStage
from pipelines.tokens.tokenize import TokenizeStage

PIPELINE = Pipeline([
    IngestStage(),
    HeuristicFilterStage(),
    DedupStage(),
    QualityFilterStage(),
    TokenizeStage(),
    ShardsStage(),
])


def run_pipeline(cfg: Config, pipeline: Pipeline = PIPELINE, **kwargs) -> dict:
    """Run the Zyda-2 pipeline (or `pipeline`) for `cfg`; returns report.json's content.
    Arguments as `pipelines.core.run.run` (resume, overwrite, quiet, only, until, links, command,
    allow_empty); raises RunError, ConfigError, AccountingError (pipelines/core/report.py)."""
    return runner.run(pipeline, cfg, **kwargs)


def rerun_dedup(run_dir: Path, overrides: list[str], output: Path, quiet: bool = False,
                overwrite: bool = False, resume: bool = False, command: list[str] | None = None) -> dict:
    """Dedup again with other parameters on an existing run's ingest output, into `output`.

    `output` links the run's ingest folder and signature cache, so only clustering is recomputed
    when the shingling and hash parameters are unchanged."""
    manifest_path = Path(run_dir) / "manifest.json"
    if not manifest_path.exists():
        raise RunError(f"{run_dir} is not a zyda2 run folder (no manifest.json)")
    cfg = config_from_dict(read_json(manifest_path)["config"], overrides, output_dir=str(output))
    links = {rel: (Path(run_dir) / rel).resolve() for rel in ("ingest", "dedup/signatures")}
    return run_pipeline(cfg, resume=resume, overwrite=overwrite, quiet=quiet, until="dedup", links=links,
                        command=command)
