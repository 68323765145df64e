"""Model-based quality classifiers behind one interface, plus their training and evaluation.

`load_classifier(cfg)` returns an object with `predict(texts) -> (labels, prob_high)`:
- `deberta`: NVIDIA's `quality-classifier-deberta` (DeBERTa-v3-base, 1024 tokens, High/Medium/Low),
  the same module layout as NVIDIA's checkpoint (`model.*` backbone, `fc.*` head, softmax of the
  first token), so its safetensors load with strict key matching. Weights come from a local folder
  or the Hub (`huggingface_hub.snapshot_download`, which honours HF_TOKEN and the local cache).
  We use transformers directly rather than NeMo Curator's classifier stage: Curator's text extras pin
  versions that conflict with datatrove[processing] and its executors want more than 2 CPUs.
- `fasttext`: a bigram fastText model trained by `train_fasttext` (`zyda2.py train-quality`); the
  predicted label is High when P(good) reaches the model's threshold, Low otherwise.

`quality_prob` is always the probability of the High (good) class, so thresholds and the anneal
mixture's "top quality" cut mean the same thing for both backends.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- metrics

def metrics(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray) -> dict:
    """Accuracy, precision, recall, F1 of the positive (good) class, and ROC AUC of the scores."""
    y_true, y_pred, y_score = np.asarray(y_true, bool), np.asarray(y_pred, bool), np.asarray(y_score, float)
    tp = int((y_true & y_pred).sum())
    fp = int((~y_true & y_pred).sum())
    fn = int((y_true & ~y_pred).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"n": int(len(y_true)), "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
            "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "roc_auc": roc_auc(y_true, y_score)}


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    pos, neg = int(y_true.sum()), int((~y_true).sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(y_score, kind="mergesort")
    ranks = np.empty(len(y_score))
    sorted_scores = y_score[order]
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y_true].sum() - pos * (pos + 1) / 2) / (pos * neg))


# ---------------------------------------------------------------- labelled data

@dataclass
class Labelled:
    texts: list[str]
    good: np.ndarray  # bool


def read_labels(path: str | Path) -> Labelled:
    """JSONL with `text` and `label` (good|bad), as ../shared/data/quality/labels.jsonl."""
    texts, good = [], []
    with open(path) as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("label") not in ("good", "bad") or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{n + 1}: expected {{'text': str, 'label': 'good'|'bad'}}")
            texts.append(row["text"])
            good.append(row["label"] == "good")
    return Labelled(texts, np.array(good, bool))


def read_folders(positive: str | Path, negative: str | Path) -> Labelled:
    """Every *.txt file of the positive folder is good, of the negative folder bad."""
    texts, good = [], []
    for folder, label in ((positive, True), (negative, False)):
        for p in sorted(Path(folder).rglob("*.txt")):
            texts.append(p.read_text(errors="replace"))
            good.append(label)
    return Labelled(texts, np.array(good, bool))


def split(data: Labelled, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> tuple[Labelled, Labelled, Labelled]:
    """Stratified train / validation / test split, deterministic for a seed."""
    rng = random.Random(seed)
    parts: list[list[int]] = [[], [], []]
    for label in (True, False):
        idx = [i for i in range(len(data.texts)) if data.good[i] == label]
        rng.shuffle(idx)
        a = round(len(idx) * fractions[0])
        b = a + round(len(idx) * fractions[1])
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.extend(chunk)
    return tuple(Labelled([data.texts[i] for i in sorted(p)], data.good[sorted(p)]) for p in parts)


# ---------------------------------------------------------------- fastText

def fasttext_line(text: str, max_chars: int | None = None) -> str:
    """One line per example, lowercased. fastText splits words on any whitespace itself; only line
    breaks must go. (A regex that folds all whitespace costs more than the prediction: 4,100 vs
    30,000 docs/s on the fixtures.)"""
    return (text[:max_chars] if max_chars else text).replace("\n", " ").replace("\r", " ").lower()


class FastTextClassifier:
    labels = ["High", "Low"]

    def __init__(self, path: str | Path, threshold: float | None = None, max_chars: int | None = None):
        import fasttext
        self.model = fasttext.load_model(str(path))
        sidecar = Path(str(path) + ".json")
        meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        self.threshold = threshold if threshold is not None else meta.get("threshold", 0.5)
        self.max_chars = max_chars if max_chars is not None else meta.get("max_chars")  # as trained

    def prob_good(self, texts: list[str]) -> np.ndarray:
        lines = [fasttext_line(t, self.max_chars) for t in texts]
        labels, probs = self.model.predict(lines, k=2)
        out = np.empty(len(lines))
        for i, (ls, ps) in enumerate(zip(labels, probs)):
            d = dict(zip(ls, ps))
            out[i] = d.get("__label__good", 1.0 - d.get("__label__bad", 1.0))
        return np.clip(out, 0.0, 1.0)

    def predict(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        p = self.prob_good(texts)
        return ["High" if x >= self.threshold else "Low" for x in p], p


def _fit(train_file: str, output: str, epoch: int, dim: int, seed: int, quantize: bool) -> float:
    """Train, optionally quantise and save; returns the learning rate that trained without diverging."""
    import fasttext
    lr = 0.2
    while True:  # fastText diverges (NaN) when the rate is too high for long documents
        try:
            # 100k bigram buckets (not 2M): a 25 MB model instead of 512 MB, same held-out AUC here
            model = fasttext.train_supervised(input=train_file, epoch=epoch, lr=lr, wordNgrams=2, dim=dim,
                                              bucket=100_000, minCount=1, loss="softmax", thread=1, seed=seed,
                                              verbose=0)
            break
        except RuntimeError as e:
            if "NaN" not in str(e) or lr < 0.01:
                raise
            lr /= 2
    if quantize:
        model.quantize(input=train_file, retrain=True, qnorm=True, cutoff=QUANTIZE_CUTOFF)
    model.save_model(output)
    return lr


QUANTIZE_CUTOFF = 20_000  # rows kept by quantisation: 1 s instead of 22 s for all 100k+ rows, same test AUC


def train_fasttext(data: Labelled, output: str | Path, seed: int = 0, epoch: int = 50, dim: int = 64,
                   quantize: bool = True, max_chars: int | None = 6000) -> dict:
    """Split 60/20/20 (train/valid/test): fit on train and pick the P(good) threshold that maximises F1
    on valid, then refit on train+valid (same settings; 80% of the labels instead of 60%) and report
    the final model's figures on the untouched test 20% at that threshold.
    Documents are seen through the same first-`max_chars` window as at scoring time.
    Writes the final model and `<model>.json` (threshold, metrics, sizes). Deterministic for a seed."""
    train, valid, test = split(data, seed=seed)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        selection = Path(tmp) / "selection.bin"
        lr = _fit_texts(train.texts, train.good, selection, Path(tmp), epoch, dim, seed, quantize, max_chars)
        clf = FastTextClassifier(selection, threshold=0.5, max_chars=max_chars)
        valid_p = clf.prob_good(valid.texts)
        candidates = np.unique(np.r_[valid_p, 0.5])
        best = max(candidates, key=lambda t: (metrics(valid.good, valid_p >= t, valid_p)["f1"], -abs(t - 0.5)))
        final_lr = _fit_texts(train.texts + valid.texts, np.r_[train.good, valid.good], output, Path(tmp), epoch, dim,
                              seed, quantize, max_chars)
    test_p = FastTextClassifier(output, threshold=0.5, max_chars=max_chars).prob_good(test.texts)
    report = {"backend": "fasttext", "threshold": float(best), "quantized": quantize, "seed": seed, "lr": final_lr,
              "max_chars": max_chars, "fit_on": "train+valid",
              "sizes": {"train": len(train.texts), "valid": len(valid.texts), "test": len(test.texts)},
              "valid": {**metrics(valid.good, valid_p >= best, valid_p), "model": "train only", "lr": lr},
              "test": metrics(test.good, test_p >= best, test_p),
              "model_bytes": os.path.getsize(output)}
    Path(str(output) + ".json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _fit_texts(texts: list[str], good, dest: Path, tmp: Path, epoch: int, dim: int, seed: int, quantize: bool,
               max_chars: int | None) -> float:
    """Fit one fastText model on labelled texts into `dest`; returns the learning rate used."""
    train_file = tmp / f"{dest.name}.txt"
    train_file.write_text("".join(f"__label__{'good' if g else 'bad'} {fasttext_line(t, max_chars)}\n"
                                  for t, g in zip(texts, good)))
    # A fresh process: fastText's training diverges (NaN at any rate) in a process where some other
    # library changed the floating-point state; the full test suite hit it, a clean process never does.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_fit, (str(train_file), str(dest), epoch, dim, seed, quantize))


# ---------------------------------------------------------------- DeBERTa

def resolve_model_dir(name_or_path: str) -> Path:
    """A local folder, or a Hub repo id fetched into (or found in) the Hugging Face cache."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    hint = (f"download it with `huggingface-cli download {name_or_path}` (HF_TOKEN from the environment) "
            "or set quality_filter.model to a local folder")
    if name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"quality model folder {name_or_path} does not exist; {hint}")
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model",
                                                                    "*.txt"]))
    except Exception as e:  # offline, unknown repo, gated without a token: one message that says what to do
        raise FileNotFoundError(f"quality model {name_or_path!r} is not in the Hugging Face cache and could not be "
                                f"downloaded ({type(e).__name__}); {hint}") from None


class DebertaClassifier:
    """NVIDIA's quality classifier: DeBERTa backbone, dropout, linear head on the first token."""

    def __init__(self, name_or_path: str, max_chars: int = 6000, max_tokens: int = 1024, batch_size: int = 256,
                 device: str = "auto"):
        import torch
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        folder = resolve_model_dir(name_or_path)
        config = json.loads((folder / "config.json").read_text())
        self.id2label = {int(k): v for k, v in config["id2label"].items()}
        self.labels = [self.id2label[i] for i in sorted(self.id2label)]
        self.high = self.labels.index("High")
        self.max_chars, self.max_tokens, self.batch_size = max_chars, min(max_tokens, config.get("max_len", 1024)), \
            batch_size
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        has_tokenizer = any((folder / f).exists() for f in ("tokenizer.json", "spm.model", "tokenizer_config.json"))
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder) if has_tokenizer else config["base_model"])

        class QualityModel(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(config["base_model"]))
                self.dropout = torch.nn.Dropout(config.get("fc_dropout", 0.2))
                self.fc = torch.nn.Linear(self.model.config.hidden_size, len(config["id2label"]))

            def forward(self, input_ids, attention_mask):
                features = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return torch.softmax(self.fc(self.dropout(features))[:, 0, :], dim=1)

        self.model = QualityModel()
        weights = folder / "model.safetensors"
        state = load_file(str(weights)) if weights.exists() else torch.load(folder / "pytorch_model.bin",
                                                                             map_location="cpu")
        self.model.load_state_dict(state, strict=True)
        self.model.eval().to(self.device)
        self.torch = torch

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
        probs = np.empty((len(texts), len(self.labels)), np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start: start + self.batch_size]
                enc = self.tokenizer([texts[i][: self.max_chars] for i in idx], truncation=True,
                                     max_length=self.max_tokens, padding=True, return_tensors="pt").to(self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                    out = self.model(enc["input_ids"], enc["attention_mask"])
                probs[idx] = out.float().cpu().numpy()
        return probs

    def predict(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        p = self.predict_proba(texts)
        return [self.labels[i] for i in p.argmax(axis=1)], p[:, self.high].astype(float)


class QualityFilter:
    """A quality classifier as a `filters.base.DocumentFilter`: scores are its label (`quality_pred`)
    and P(High) (`quality_prob`), both written beside the documents; kept are `keep_labels`, the rest
    removed as `quality:<label>`."""
    output_columns = ("quality_pred", "quality_prob")

    def __init__(self, model, keep_labels: list[str]):
        self.model, self.keep_labels = model, set(keep_labels)

    def score(self, docs) -> dict[str, list]:
        preds, probs = self.model.predict(docs.column("text").to_pylist())
        return {"quality_pred": preds, "quality_prob": probs}

    def keep(self, scores: dict[str, list]) -> list[str | None]:
        return [None if p in self.keep_labels else f"quality:{p}" for p in scores["quality_pred"]]


def load_classifier(cfg):
    """The classifier of a `quality_filter` config section: fastText or NVIDIA's DeBERTa."""
    if cfg.backend == "fasttext":
        return FastTextClassifier(cfg.model, cfg.threshold, cfg.max_chars)
    return DebertaClassifier(cfg.model, cfg.max_chars, cfg.max_tokens, cfg.batch_size, cfg.device)
