"""The tokenizer saved with every checkpoint, so the folder is a complete Hugging Face model.

`AutoTokenizer.from_pretrained(<checkpoint>)` loads transformers' `SentencePieceBackend` over the
very `tokenizer.model` the shards were tokenized with: encoding is SentencePiece's own, id-exact on
every fixture document. A `tokenizers` (Rust) tokenizer converted from the same model is not: it
differs on runs of spaces (76 of 2,368 fixture documents, see `pipelines/tokens/tokenizer.py`).

Policy as trained (`tokenize.add_bos` of the data's run): `tokenizer(text)` gives
`[BOS] + ids` when the documents were trained with BOS, else `ids`. EOS is never added by the
tokenizer: it ends documents in the shards, and a tokenizer that appends it would put EOS inside
every prompt lm-eval scores. `split_special_tokens` keeps "<s>"/"</s>" written in text as the plain
text SentencePiece makes of them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipelines.tokens.tokenizer import BOS, EOS, model_path


def save_tokenizer(folder: Path, add_bos: bool, max_length: int) -> None:
    """Write `tokenizer.model` and `tokenizer_config.json` into `folder` (a Hugging Face model folder).
    `max_length`: the model's position limit in tokens (`model_max_length`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path(), folder / "tokenizer.model")
    special = {0: "<unk>", BOS: "<s>", EOS: "</s>"}
    config = {
        "tokenizer_class": "SentencePieceBackend",
        "backend": "sentencepiece",
        "legacy": True,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        # transformers' Python tokenizers add special tokens by this pattern; add_*_token state it for other tools
        "special_tokens_pattern": "bos" if add_bos else "none",
        "add_bos_token": add_bos, "add_eos_token": False,
        "split_special_tokens": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(max_length),
        "added_tokens_decoder": {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for i, c in special.items()},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def trained_add_bos(runs: list[str | Path]) -> bool:
    """`tokenize.add_bos` of the pipeline runs a model trains on (from their manifest.json; the
    pipeline's default, False, for a run without one). Raises ValueError when the runs disagree."""
    policies = set()
    for run in runs:
        manifest = Path(run) / "manifest.json"
        cfg = json.loads(manifest.read_text()).get("config", {}) if manifest.is_file() else {}
        policies.add(bool(cfg.get("tokenize", {}).get("add_bos", False)))
    if len(policies) > 1:
        raise ValueError(f"the mixture's runs were tokenized with and without BOS: {', '.join(map(str, runs))}")
    return policies.pop() if policies else False


def checkpoint_add_bos(folder: Path) -> bool:
    """Whether a checkpoint's model was trained with BOS before each document (its saved tokenizer's
    policy; False for a checkpoint saved without a tokenizer)."""
    folder = Path(folder)
    for f in (folder / "tokenizer_config.json", folder / "model" / "tokenizer_config.json"):
        if f.is_file():
            return bool(json.loads(f.read_text()).get("add_bos_token", False))
    return False
