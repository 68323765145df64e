"""Downstream evaluation: multiple-choice tasks by log-likelihood, and bits per byte on held-out shards.

Definitions follow lm-evaluation-harness, so scores are comparable with published tables (and
`tests/evaluation` checks them against lm-eval itself on the same checkpoint):
- a request is (context, continuation) with continuation = " " + text (lm-eval's target delimiter);
  tokenized exactly as lm-eval's `hf` model does with the checkpoint's own tokenizer
  (`lm_eval.api.model.TemplateLM._encode_pair`, lm-eval 0.4.13): all trailing whitespace of the context
  (`str.rstrip()`, e.g. PIQA's "\n") moves to the continuation, context + continuation is encoded
  once and split where the context's own encoding ends; BOS leads only if the checkpoint was trained
  with it (its tokenizer adds it), and an empty context is BOS alone (lm-eval's prefix token);
- `acc`: the choice with the highest summed log-likelihood is the gold one;
- `acc_norm`: the same after dividing each log-likelihood by the choice's length in characters;
- `schema` items (WinoGrande): the choices are alternative contexts for one shared continuation;
  only `acc` is defined, as in lm-eval;
- standard errors are the sample standard error of the per-item mean (ddof=1).

The scoring of one request (`encode_pair`, `loglikelihoods`) is in `pipelines.evaluation.scoring`,
which the lm-eval adapter calls too.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.evaluation.scoring import loglikelihoods
from pipelines.tokens.hf_tokenizer import checkpoint_add_bos
from pipelines.tokens.indexed_dataset import ConcatenatedDatasets, IndexedDataset
from pipelines.tokens.tokenizer import _processor

DEFAULT_TASKS = ("arc_easy", "arc_challenge", "piqa", "winogrande", "openbookqa", "hellaswag")


@dataclass
class Item:
    task: str
    id: str
    kind: str  # multiple_choice | schema
    query: str
    choices: list[str]
    gold: int

    def requests(self) -> list[tuple[str, str]]:
        if self.kind == "schema":
            return [(choice, " " + self.query) for choice in self.choices]
        return [(self.query, " " + choice) for choice in self.choices]


def load_task(path: Path, limit: int | None = None) -> list[Item]:
    """One task file: JSON lines with task, id, kind, query, choices, gold (see ../shared/data/README)."""
    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            item = Item(d["task"], d["id"], d["kind"], d["query"], list(d["choices"]), int(d["gold"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a task item ({type(e).__name__}: {e})") from None
        if item.kind not in ("multiple_choice", "schema") or not 0 <= item.gold < len(item.choices):
            raise ValueError(f"{path}:{n}: kind {item.kind!r} / gold {item.gold} is not a valid item")
        items.append(item)
        if limit and len(items) == limit:
            break
    return items


def _stderr(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def score_items(items: list[Item], lls: list[float]) -> dict:
    """Per-item correctness and the task's accuracies from the choices' log-likelihoods."""
    acc, acc_norm, pos, ll_per_item = [], [], 0, []
    for item in items:
        ll = np.array(lls[pos:pos + len(item.choices)])
        ll_per_item.append([float(x) for x in ll])
        pos += len(item.choices)
        acc.append(int(np.argmax(ll) == item.gold))
        if item.kind == "multiple_choice":
            acc_norm.append(int(np.argmax(ll / np.array([float(len(c)) for c in item.choices])) == item.gold))
    result = {"n": len(items), "acc": float(np.mean(acc)), "acc_stderr": _stderr(np.array(acc)),
              "items": {"id": [i.id for i in items], "acc": acc, "loglikelihoods": ll_per_item}}
    if acc_norm:
        result.update(acc_norm=float(np.mean(acc_norm)), acc_norm_stderr=_stderr(np.array(acc_norm)))
        result["items"]["acc_norm"] = acc_norm
    return result


def evaluate_tasks(model, task_files: dict[str, Path], batch_size: int = 16, limit: int | None = None,
                   quiet: bool = False, add_bos: bool = False) -> dict:
    """Each task's scores (`score_items`); `add_bos`: the checkpoint's tokenizer policy."""
    results = {}
    for task, path in task_files.items():
        items = load_task(path, limit)
        pairs = [p for item in items for p in item.requests()]
        t0 = time.perf_counter()
        lls = [ll for ll, _ in loglikelihoods(model, pairs, batch_size, progress=task, add_bos=add_bos)]
        results[task] = score_items(items, lls)
        if not quiet:
            print(f"[eval] {task}: {len(items)} items, {len(pairs)} requests in {time.perf_counter() - t0:.1f} s, "
                  f"acc {results[task]['acc']:.4f}", file=sys.stderr, flush=True)
    return results


def aggregate(tasks: dict) -> dict:
    """Mean over tasks (each task weighs the same, as in Zyphra's and most papers' aggregates);
    acc_norm where a task defines it, acc otherwise."""
    scores = [t.get("acc_norm", t["acc"]) for t in tasks.values()]
    return {"score": float(np.mean(scores)) if scores else float("nan"), "tasks": len(scores),
            "metric": "mean over tasks of acc_norm (acc where acc_norm is undefined)"}


@functools.cache
def token_bytes() -> np.ndarray:
    """UTF-8 bytes each token stands for (byte-fallback pieces: 1; BOS/EOS/UNK: 0)."""
    sp = _processor()
    out = np.zeros(sp.get_piece_size(), np.int64)
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        out[i] = 1 if sp.is_byte(i) else len(sp.id_to_piece(i).replace("\u2581", " ").encode())
    return out


@torch.no_grad()
def bits_per_byte(model, dataset: IndexedDataset | ConcatenatedDatasets, seq_len: int, max_sequences: int,
                  batch_size: int = 8) -> dict:
    """Tokenizer-independent loss of held-out documents (a component's validation shards, read as one):
    total NLL in bits / bytes of text predicted.

    The documents are packed in file order into non-overlapping windows (as in validation loss); every
    predicted token counts its bytes (SentencePiece's word-boundary marker counts as the space it is)."""
    from pipelines.training.token_stream import validation_sequences
    seqs = validation_sequences(dataset, seq_len, max_sequences)
    nbytes = token_bytes()
    device = next(model.parameters()).device
    model.eval()
    nll, byt = [], []
    for i in range(0, len(seqs), batch_size):
        batch = torch.from_numpy(seqs[i:i + batch_size]).to(device)
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none").sum(1)
        nll.extend(loss.cpu().tolist())
        byt.extend(nbytes[seqs[i:i + batch_size, 1:]].sum(1).tolist())
    nll, byt = np.array(nll), np.array(byt)
    per_seq = nll / math.log(2) / np.maximum(byt, 1)
    return {"bpb": float(nll.sum() / math.log(2) / byt.sum()), "bpb_stderr": _stderr(per_seq),
            "sequences": len(seqs), "tokens": int(len(seqs) * seq_len), "bytes": int(byt.sum())}


def task_files(eval_dir: Path, names: list[str]) -> dict[str, Path]:
    files = {}
    for name in names:
        path = Path(eval_dir) / f"{name}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"task {name!r}: no {path} (local tasks: "
                                    f"{', '.join(sorted(p.stem for p in Path(eval_dir).glob('*.jsonl')))})")
        files[name] = path
    return files


def evaluate_checkpoint(checkpoint: Path, eval_dir: Path | None, tasks: list[str], run_dir: Path | None = None,
                        batch_size: int = 16, limit: int | None = None, bpb_sequences: int = 64,
                        seq_len: int = 256, device: str = "cpu", quiet: bool = False, model=None) -> dict:
    """One checkpoint's scores on local tasks (`<eval_dir>/<task>.jsonl`) and, with `run_dir`, bits
    per byte on that run's validation shards, as one JSON-able dict. `model`: the checkpoint already
    loaded (on `device`). Tasks of lm-evaluation-harness itself go through `lm_eval_adapter.run_lm_eval`
    (`zyda2.py eval` adds them to this dict and recomputes the aggregate)."""
    if model is None:
        from pipelines.training.model import load_model
        model = load_model(checkpoint, device)
    result = {"checkpoint": str(checkpoint), "tasks": {}, "bpb": {}}
    if tasks:
        result["tasks"].update(evaluate_tasks(model, task_files(eval_dir, tasks), batch_size, limit, quiet,
                                              checkpoint_add_bos(checkpoint)))
    result["aggregate"] = aggregate(result["tasks"])
    if run_dir is not None:
        from pipelines.training.token_stream import validation_shards
        for name, ds in validation_shards(run_dir).items():
            if ds.n_tokens > seq_len:
                result["bpb"][name] = bits_per_byte(model, ds, seq_len, bpb_sequences, batch_size)
    return result
