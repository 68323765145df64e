"""Publish a finished run to the Hugging Face Hub: dataset card + resumable upload of `<run>/publish/`.

The shards stage already wrote the release layout, `publish/data/<component>/<subfolder>/part.N.parquet`.
This module adds `publish/README.md` (YAML `configs:` as in Zyphra/Zyda-2: `default` over every
component, one config per component; then the run's statistics and provenance, all read from
`report.json`, `manifest.json` and the ingest completion markers, so the same run always gives the
same card) and uploads the folder with `HfApi.upload_folder`.

Why `upload_folder` and not `upload_large_folder`: in huggingface_hub 2.x `upload_folder` is the
resumable large-folder upload (`upload_large_folder` is gone). It commits in batches, and a re-run
asks the Hub for each file's remote oid first and skips files already committed with the same
content; with `hf_xet` (installed) the data goes through Xet storage, which also skips chunks a
killed run already sent. So resuming an interrupted publish is running the same command again.

The token is resolved by huggingface_hub (HF_TOKEN, then `hf auth login`'s token file); it is
passed to the client only and never printed, logged or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client: its HTTPError covers HTTP status and connection errors
import yaml
from huggingface_hub import DatasetCard, DatasetCardData, HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects, validate_repo_id

from pipelines.core.outputs import atomic_path, read_json
from pipelines.core.schema import QUALITY_SCHEMA
from pipelines.core.sources import COMPONENTS

LICENSE = "odc-by"  # Zyda-2's license; every component's source is ODC-By (DCLM: CC-BY-4.0) under Common Crawl terms


class PublishError(RuntimeError):
    """The run cannot be published as asked; the message says what to do."""


@dataclass(frozen=True)
class UploadFile:
    path_in_repo: str
    size: int


def check_repo_id(repo_id: str) -> None:
    if repo_id.count("/") != 1:
        raise PublishError(f"--repo must be ORG/NAME (a dataset repo id), got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(f"--repo {repo_id!r} is not a valid Hub repo id: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def publish_folder(run_dir: Path) -> Path:
    """`<run>/publish`, after checking the run finished and wrote its Hub-layout parquet."""
    run_dir = Path(run_dir)
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        raise PublishError(f"{run_dir} is not a zyda2 run folder (no manifest.json)")
    status = read_json(manifest).get("status")
    if status != "done" or not (run_dir / "report.json").exists():
        raise PublishError(f"{run_dir} is not a finished run (status {status!r}); finish it with "
                           "`zyda2.py run CONFIG --output RUN_DIR --resume` first")
    folder = run_dir / "publish"
    if not any((folder / "data").glob("*/*/*.parquet")):
        raise PublishError(f"{folder}/data holds no parquet files; run the pipeline with "
                           "shards.publish_parquet: true")
    return folder


def size_category(n: int) -> str:
    """The Hub's `size_categories` bucket for n rows."""
    if n < 1000:
        return "n<1K"
    bounds = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T"]
    for i, (low, high) in enumerate(zip(bounds, bounds[1:])):
        if n < 10 ** (4 + i):
            return f"{low}<n<{high}"
    return "n>1T"


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _inputs(run_dir: Path) -> dict[str, list[str]]:
    """Input files per source, from the ingest completion markers (the files the run actually read):
    every file of a bundle (its marker's `files`), a file split in pieces once."""
    files: dict[str, set[str]] = {}
    for marker in sorted((run_dir / "ingest" / "_done").glob("*.json")):
        stats = read_json(marker)["stats"]
        files.setdefault(stats["source"], set()).update(stats.get("files") or [stats["src_file"]])
    return {s: sorted(v) for s, v in sorted(files.items())}


def build_card(run_dir: Path, repo_id: str) -> str:
    """The dataset card's text: deterministic for a given run folder and repo id."""
    run_dir = Path(run_dir)
    report, manifest = read_json(run_dir / "report.json"), read_json(run_dir / "manifest.json")
    cfg = manifest["config"]
    shards = report["details"].get("shards", {})
    comps = shards.get("components", {})
    source_of = {c: s for s, c in COMPONENTS.items()}
    present = [c for c in COMPONENTS.values() if any((run_dir / "publish" / "data" / c).glob("*/*.parquet"))]
    published = sum(comps.get(c, {}).get("published_documents", 0) for c in present)

    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*/*/*"}]}]
    configs += [{"config_name": c, "data_files": [{"split": "train", "path": f"data/{c}/*/*"}]} for c in present]
    name = repo_id.split("/")[1]
    data = DatasetCardData(license=LICENSE, task_categories=["text-generation"], language=["en"], pretty_name=name,
                           size_categories=[size_category(published)], configs=configs)

    weights = cfg["shards"]["pretrain_weights"]
    pre = shards.get("mixtures", {}).get("pretrain", {}).get("shares", {})
    comp_rows = [[f"`{c}`", source_of[c], comps.get(c, {}).get("published_documents", 0),
                  comps.get(c, {}).get("train_tokens", 0), comps.get(c, {}).get("val_tokens", 0),
                  comps.get(c, {}).get("anneal_tokens", 0), weights.get(source_of[c], 0.0), pre.get(c, 0.0)]
                 for c in present]
    stages = report["stages"]  # in the pipeline's order
    sources = report["sources"]
    flow_rows = [[s, r["read"], *[r["stages"].get(st, {}).get("out", "-") for st in stages], r["quarantined"],
                  r["kept"]] for s, r in sources.items()]
    removed_rows = [[s, *key.split(":", 1), n] for s, r in sources.items() for key, n in r["removed"].items()]
    mix_rows = [[m, k, v] for m, mix in shards.get("mixtures", {}).items() for k, v in mix["shares"].items()]
    inputs = _inputs(run_dir)
    t = report["totals"]

    body = [
        f"# {name}",
        "",
        f"A rebuild of [Zyda-2](https://huggingface.co/datasets/Zyphra/Zyda-2) made with zyda2: {t['read']:,} "
        f"documents read from {sum(map(len, inputs.values())):,} input files, {published:,} published after "
        "heuristic filtering, MinHash cross-deduplication and quality filtering. Same layout and configs as the "
        "Zyda-2 release: `default` holds every component, and each component is its own config.",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{repo_id}", name="default", split="train", streaming=True)',
        f'part = load_dataset("{repo_id}", name="{present[0]}", split="train")',
        "```",
        "",
        "## Components",
        "",
        "Tokens are Mistral v0.1 tokens (EOS per document). Pretrain weight: the recipe's sampling weight per "
        "component; share: its share of the pretraining mixture.",
        "",
        _table(["config", "source", "documents", "train tokens", "validation tokens", "anneal tokens",
                "pretrain weight", "pretrain share"], comp_rows),
        "",
        "## Documents through the pipeline",
        "",
        "Documents out of each stage, per source; `read = kept + removed + quarantined` holds for every source.",
        "",
        _table(["source", "read", *stages, "quarantined", "kept"], flow_rows),
        "",
        "### Removed",
        "",
        _table(["source", "stage", "reason", "documents"], removed_rows) if removed_rows else "Nothing was removed.",
        "",
        "## Mixtures",
        "",
        "Shares of each mixture by component (`:replay`: the pretraining data replayed during annealing).",
        "",
        _table(["mixture", "component", "share"], mix_rows) if mix_rows else "No mixtures were written.",
        "",
        "## Columns",
        "",
        _table(["column", "type"], [[f"`{f.name}`", str(f.type)] for f in QUALITY_SCHEMA]),
        "",
        "`metadata` is a JSON object holding every other native field of the source verbatim; `src_file` and "
        "`src_row` locate the document in its source file; `quality_pred`/`quality_prob` are set where the "
        "quality classifier ran.",
        "",
        "## Provenance",
        "",
        _table(["run", ""], [["name", manifest.get("run_name")], ["config hash", f"`{manifest.get('config_hash')}`"],
                          ["code version (git)", f"`{manifest.get('git_commit')}`"],
                          ["started", manifest.get("started_at")], ["finished", manifest.get("finished_at")],
                          *[[f"{k} version", v] for k, v in sorted(manifest.get("versions", {}).items())]]),
        "",
        _table(["source", "input", "files"], [[s, f"`{cfg['sources'][s]['path']}`", len(v)]
                                               for s, v in inputs.items()]),
        "",
        "<details><summary>Input files</summary>",
        "",
        *[f"- {s}: `{f}`" for s, files in inputs.items() for f in files],
        "",
        "</details>",
        "",
        "<details><summary>Resolved config</summary>",
        "",
        "```yaml",
        yaml.safe_dump(cfg, sort_keys=True).rstrip(),
        "```",
        "",
        "</details>",
        "",
        "## License",
        "",
        "ODC-By 1.0, as Zyda-2; use is also subject to Common Crawl's terms of use and to the licenses of the "
        "source datasets (DCLM-baseline: CC-BY-4.0; FineWeb-Edu, Zyda, Dolma: ODC-By).",
    ]
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"))


def write_card(run_dir: Path, repo_id: str) -> Path:
    """Write `<run>/publish/README.md` (atomically) and return the publish folder."""
    check_repo_id(repo_id)
    folder = publish_folder(run_dir)
    card = build_card(Path(run_dir), repo_id)
    token = get_token()
    if token and token in card:  # e.g. a config value expanded from the environment
        raise PublishError("the dataset card would contain your Hugging Face token (it is in the run's config); "
                           "remove it from the config and re-run the pipeline")
    with atomic_path(folder / "README.md") as tmp:
        tmp.write_text(card, encoding="utf-8")
    return folder


def upload_plan(folder: Path) -> list[UploadFile]:
    """What `upload_folder` sends from `folder`: every file but its own ignores (`.git/`, `.cache/huggingface/`)."""
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    return [UploadFile(rel, files[rel]) for rel in filter_repo_objects(files, ignore_patterns=DEFAULT_IGNORE_PATTERNS)]


def upload(folder: Path, repo_id: str, private: bool = False, endpoint: str | None = None) -> str:
    """Create the dataset repo if needed and upload `folder`; re-running resumes. Returns the commit URL.

    `endpoint` defaults to HF_ENDPOINT (or huggingface.co), as read by huggingface_hub."""
    token = get_token()
    if not token:
        raise PublishError("no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access")
    api = HfApi(endpoint=endpoint, token=token)
    where = f"{api.endpoint}/datasets/{repo_id}"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder,
                                 commit_message=f"Publish {folder.parent.name} with zyda2")
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            raise PublishError(f"{where}: the Hub refused the token (HTTP {status}); log in with `hf auth login` "
                               "or set HF_TOKEN to a token with write access to the namespace") from None
        raise PublishError(f"upload to {where} stopped: {_first_line(e)}; run the same command again "
                           "to resume (files already uploaded are skipped)") from None
    except (httpx2.HTTPError, RuntimeError, ValueError) as e:
        if isinstance(e, RuntimeError) and not isinstance(e.__cause__, httpx2.HTTPError):
            raise  # not a transfer failure (huggingface_hub wraps a failed LFS upload in a RuntimeError)
        cause = f"{_first_line(e)} ({_first_line(e.__cause__)})" if isinstance(e, RuntimeError) else _first_line(e)
        raise PublishError(f"upload to {where} stopped: {cause}; run the same command again "
                           "to resume (files already uploaded are skipped)") from None
    return info.commit_url
