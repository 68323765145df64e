"""A checkpoint folder is a complete Hugging Face model: transformers' own `AutoTokenizer` and
`AutoModelForCausalLM` load it, and the tokenizer is id-exact with SentencePiece (and with the shards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import shard_tokens_by_id

ADVERSARIAL = ["", " ", "  two leading", "trailing   ", "a\n\nb\t\tc\r\n", "\u00a0nbsp\u2003em", "emoji 🎉🎉 𝄞",
               "▁ and <s> </s> <unk> as text", " " * 40, "\n" * 5, "é vs e\u0301", "x  y   z    w"]


@pytest.fixture(scope="module")
def checkpoint(pretrained_tiny) -> Path:
    _, summary = pretrained_tiny
    return Path(summary["checkpoint"])


@pytest.fixture(scope="module")
def sentencepiece():
    import sentencepiece as spm

    from pipelines.tokens.tokenizer import model_path
    return spm.SentencePieceProcessor(model_file=str(model_path()))


def published_documents(run: Path) -> tuple[list[str], list[str]]:
    table = pq.read_table(sorted((run / "publish" / "data").rglob("*.parquet")), columns=["nemo_id", "text"])
    return table.column("nemo_id").to_pylist(), table.column("text").to_pylist()


@pytest.mark.parametrize("sub", ["", "model"])
def test_auto_tokenizer_is_id_exact_on_every_published_document(checkpoint, local_run, sentencepiece, sub):
    """transformers' AutoTokenizer on the checkpoint folder gives SentencePiece's ids on every published
    document; with the trained policy (no BOS, EOS ends each document) they are the shards' tokens."""
    from transformers import AutoTokenizer
    run, report = local_run
    tok = AutoTokenizer.from_pretrained(checkpoint / sub)
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, len(tok)) == (1, 2, 0, 32000)
    ids, texts = published_documents(run)
    assert len(texts) == report["totals"]["kept"] > 1000
    if sub:  # model/ holds the same files: a sample suffices
        ids, texts = ids[::20], texts[::20]
    mismatched = [i for i, text in zip(ids, texts) if tok(text)["input_ids"] != sentencepiece.encode(text)]
    assert mismatched == []
    trained = shard_tokens_by_id(run)
    for i, text in zip(ids[::40], texts[::40]):
        assert tok(text)["input_ids"] + [tok.eos_token_id] == trained[i].tolist()
    for text in ADVERSARIAL:
        assert tok(text)["input_ids"] == sentencepiece.encode(text)


def test_bos_policy_is_saved_as_trained(tmp_path, sentencepiece):
    from transformers import AutoTokenizer

    from pipelines.tokens.hf_tokenizer import save_tokenizer
    for add_bos in (True, False):
        save_tokenizer(tmp_path / str(add_bos), add_bos, 4096)
        tok = AutoTokenizer.from_pretrained(tmp_path / str(add_bos))
        text = "  The shards' documents, as trained."
        assert tok(text)["input_ids"] == [1] * add_bos + sentencepiece.encode(text)
        assert tok(text, add_special_tokens=False)["input_ids"] == sentencepiece.encode(text)


@pytest.mark.parametrize("sub", ["", "model"])
def test_auto_model_loads_the_checkpoint_folder(checkpoint, sub):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.training.model import load_model
    model = AutoModelForCausalLM.from_pretrained(checkpoint / sub).eval()
    tok = AutoTokenizer.from_pretrained(checkpoint / sub)
    ours = load_model(checkpoint).eval()
    ids = torch.tensor([tok("The model reads its own tokenizer's ids.")["input_ids"]])
    with torch.no_grad():
        assert np.allclose(model(ids).logits.numpy(), ours(ids).logits.numpy(), atol=1e-6)
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5 and isinstance(tok.decode(out[0]), str)
