"""`train-quality` and `eval-quality`: the fastText quality classifier from labelled documents."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.cli.common import CommandError


def cmd_train_quality(args) -> int:
    from filters.quality import read_folders, train_fasttext
    if args.labels:
        data = _labels(args.labels)
    elif args.positive and args.negative:
        data = read_folders(args.positive, args.negative)
    else:
        raise CommandError("train-quality: give LABELS.jsonl, or --positive DIR and --negative DIR")
    report = train_fasttext(data, args.output, seed=args.seed, quantize=not args.no_quantize)
    if args.labels:  # lets eval-quality tell when it is given documents the model was trained on
        report["labels_file"] = str(Path(args.labels).resolve())
        Path(args.output + ".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def _labels(path: str):
    """The labelled documents of a JSONL file; a malformed file is a one-line error."""
    from filters.quality import read_labels
    try:
        return read_labels(path)
    except ValueError as e:  # json.JSONDecodeError included
        raise CommandError(f"{path}: not a labels file ({str(e).splitlines()[0]}); each line is "
                           "{\"text\": ..., \"label\": \"good\"|\"bad\"}") from None


def cmd_eval_quality(args) -> int:
    import numpy as np

    from filters.quality import load_classifier, metrics
    from pipelines.core.config import QualityFilterConfig
    backend = "deberta" if Path(args.model).is_dir() or not Path(args.model).exists() else "fasttext"
    cfg = QualityFilterConfig(backend=backend, model=args.model, threshold=args.threshold, device=args.device,
                              keep_labels=args.keep_labels.split(","))
    model = load_classifier(cfg)
    data = _labels(args.labels)
    preds, prob_high = model.predict(data.texts)
    result = {"model": args.model, "backend": backend, "labels": args.labels,
              **metrics(data.good, np.isin(preds, cfg.keep_labels), prob_high)}
    overlap = training_overlap(Path(args.model), data.texts)
    if overlap is not None:
        result["train_overlap"] = overlap
    print(json.dumps(result, indent=2))
    if overlap and overlap["documents"]:
        print(f"zyda2: warning: {overlap['documents']:,} of {len(data.texts):,} documents of {args.labels} are in "
              f"the model's training file {overlap['train_file']}: these metrics are optimistic; evaluate on "
              "held-out labels", file=sys.stderr)
    return 0


def training_overlap(model: Path, texts: list[str]) -> dict | None:
    """How many of `texts` the model was fitted on (train + valid: `train-quality` refits on both once
    the threshold is chosen): MODEL.json names the labels file and seed and the split is redone as in
    training. None when the model has no such record or the file is gone."""
    from filters.quality import read_labels, split
    meta_path = model.with_name(model.name + ".json")
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    train_file = meta.get("labels_file")
    if not isinstance(train_file, str) or not Path(train_file).is_file():
        return None
    train, valid, _ = split(read_labels(train_file), seed=meta.get("seed", 0))
    seen = set(train.texts) | set(valid.texts)
    return {"train_file": train_file, "documents": sum(t in seen for t in texts)}
