"""lm-evaluation-harness adapter: the project's checkpoints as an lm-eval model named `zyda2`.

A checkpoint folder is a complete Hugging Face model with an exact SentencePiece tokenizer, so
lm-eval's own `hf` model runs on it as it is (`lm_eval --model hf --model_args pretrained=CKPT`;
checked against `zyda2.py eval` in tests/clients). This adapter answers lm-eval's requests with the
project's batched scorer (`pipelines.evaluation.scoring.loglikelihoods`, the same tokenization), which
lets `zyda2.py eval` hand non-local tasks to lm-eval with the model it already loaded.

  python -m pipelines.evaluation.lm_eval_adapter --model_args pretrained=runs/x/checkpoints/step_0000300 --tasks arc_easy
takes every lm_eval CLI option (tasks need their data: lm-eval downloads it from the Hub).
"""  # noqa: E501 (the example command above stays one copy-pastable line)

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from pipelines.evaluation.scoring import loglikelihoods
from pipelines.tokens.hf_tokenizer import checkpoint_add_bos
from pipelines.tokens.tokenizer import BOS, EOS, decode, encode


@register_model("zyda2")
class Zyda2LM(LM):
    def __init__(self, pretrained: str | None = None, batch_size: int | str = 16, device: str = "cpu",
                 max_length: int | None = None, model=None, **_):
        super().__init__()
        from pipelines.training.model import load_model
        self.model = model if model is not None else load_model(pretrained, device)
        self.add_bos = checkpoint_add_bos(Path(pretrained)) if pretrained else False
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self.max_length = int(max_length or self.model.config.max_position_embeddings)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return loglikelihoods(self.model, [r.args for r in requests], self.batch_size, self.max_length,
                              add_bos=self.add_bos)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        """Whole-text log-likelihood from BOS, in disjoint windows of max_length tokens (each window
        sees the previous tokens of its own window only, as lm-eval's rolling windows with no overlap)."""
        out = []
        device = next(self.model.parameters()).device
        for r in requests:
            tokens = [BOS] + encode([r.args[0]], append_eos=False)[0]
            total = 0.0
            for start in range(0, len(tokens) - 1, self.max_length):
                window = torch.tensor([tokens[start:start + self.max_length + 1]], device=device)
                with torch.no_grad():
                    logits = self.model(input_ids=window[:, :-1], use_cache=False).logits.float()
                total += -float(torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum"))
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False):
        out = []
        device = next(self.model.parameters()).device
        for r in requests:
            context, kwargs = r.args
            stops = kwargs.get("until", []) or []
            ids = torch.tensor([[BOS] + encode([context], append_eos=False)[0]], device=device)
            gen = self.model.generate(ids, max_new_tokens=int(kwargs.get("max_gen_toks", 64)), do_sample=False,
                                      pad_token_id=EOS)
            text = decode(gen[0, ids.shape[1]:].tolist())
            cut = min((text.find(s) for s in stops if s in text), default=len(text))
            out.append(text[:cut])
        return out


def write_task_configs(eval_dir: Path, names: list[str], dest: Path) -> list[str]:
    """lm-eval task YAMLs for local JSONL task files (named `zyda2_<task>`), zero-shot.

    multiple_choice: context = query, choices are continuations; schema (WinoGrande): the choices are
    alternative contexts and the query is the continuation (lm-eval's multiple-input form)."""
    dest.mkdir(parents=True, exist_ok=True)
    tasks = []
    for name in names:
        path = (Path(eval_dir) / f"{name}.jsonl").resolve()
        first = json.loads(path.read_text().splitlines()[0])
        schema = first["kind"] == "schema"
        config = {
            "task": f"zyda2_{name}", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(path)}},
            "test_split": "test", "output_type": "multiple_choice",
            "doc_to_text": "{{gold}}" if schema else "{{query}}",
            "doc_to_target": "{{query}}" if schema else "{{gold}}",
            "doc_to_choice": "{{choices}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}] + (
                [] if schema else [{"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]),
        }
        (dest / f"zyda2_{name}.yaml").write_text(json.dumps(config, indent=2))  # JSON is valid YAML
        tasks.append(f"zyda2_{name}")
    return tasks


def run_lm_eval(checkpoint: Path, tasks: list[str], batch_size: int = 16, limit: int | None = None, model=None,
                include_path: Path | None = None) -> dict:
    """Run lm-eval's own evaluator on our model; results in `pipelines.evaluation.harness`'s shape."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    lm = Zyda2LM(str(checkpoint), batch_size=batch_size, model=model)
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    res = simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, num_fewshot=0,
                          bootstrap_iters=1000, log_samples=False)
    out = {}
    for task, metrics in res["results"].items():
        name = task.removeprefix("zyda2_")
        row = {}
        for key in ("acc", "acc_norm"):
            if f"{key},none" in metrics:
                row[key] = float(metrics[f"{key},none"])
                err = metrics.get(f"{key}_stderr,none")
                row[f"{key}_stderr"] = float(err) if isinstance(err, (int, float)) else math.nan
        row["n"] = int(res.get("n-samples", {}).get(task, {}).get("effective", 0))
        out[name] = row
    return out


if __name__ == "__main__":
    from lm_eval.__main__ import cli_evaluate
    if "--model" not in sys.argv:
        sys.argv[1:1] = ["--model", "zyda2"]
    cli_evaluate()
