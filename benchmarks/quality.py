"""Quality filtering throughput per core: heuristics, fastText, and the DeBERTa classifier.

Documents: the fixtures' real web text (every source), repeated to >= 9,000 docs for the fast paths.
fastText: the model `zyda2.py train-quality` builds from the shared labels. DeBERTa: NVIDIA's
architecture at deberta-v3-base size (12 layers, hidden 768, vocab 128,100) with random weights
(no weights can be downloaded here; speed does not depend on their values), 1,024-token inputs,
on CPU with one thread. Everything single-core.

  python -m benchmarks.quality           # writes benchmarks/results/quality.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import DATA, REPO, write_results
from filters.heuristics import HeuristicFilters
from filters.quality import FastTextClassifier, read_labels, train_fasttext
from pipelines.core.config import HeuristicFilterConfig


def fixture_docs() -> list[str]:
    docs = []
    for path in sorted((DATA / "sources").rglob("*.parquet")):
        docs += pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return docs


def rate(fn, docs) -> dict:
    t0 = time.perf_counter()
    fn(docs)
    s = time.perf_counter() - t0
    return {"docs": len(docs), "seconds": round(s, 3), "docs_per_s": round(len(docs) / s, 1),
            "mb_per_s": round(sum(len(d.encode()) for d in docs) / s / 1e6, 2)}


def deberta_base_rate(docs: list[str]) -> dict:
    import sentencepiece as spm
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModel, DebertaV2Config, DebertaV2Tokenizer

    from filters.quality import DebertaClassifier
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    spm.SentencePieceTrainer.train(sentence_iterator=iter(docs[:2000]), model_prefix=str(root / "spm"),
                                   vocab_size=8000, model_type="unigram", minloglevel=2)
    ckpt = root / "ckpt"
    DebertaV2Tokenizer(vocab_file=str(root / "spm.model")).save_pretrained(ckpt)
    base = root / "base"
    DebertaV2Config(vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=512, relative_attention=True,
                    position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False,
                    pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7).save_pretrained(base)
    (ckpt / "config.json").write_text(json.dumps({"base_model": str(base), "fc_dropout": 0.2, "max_len": 1024,
                                                  "id2label": {"0": "High", "1": "Low", "2": "Medium"}}))
    backbone = AutoModel.from_config(AutoConfig.from_pretrained(base))
    state = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(3, 768), torch.zeros(3)
    save_file(state, ckpt / "model.safetensors")
    clf = DebertaClassifier(str(ckpt), max_chars=6000, max_tokens=1024, batch_size=8, device="cpu")
    clf.predict(docs[:2])
    return rate(clf.predict, docs[:8])


def main() -> None:
    docs = fixture_docs()
    many = (docs * 4)[:9472]
    model = REPO / "runs" / "models" / "quality-fasttext.ftz"
    if not model.exists():
        train_fasttext(read_labels(DATA / "quality" / "labels.jsonl"), model)
    fasttext = FastTextClassifier(model)
    heuristics = HeuristicFilters(HeuristicFilterConfig())
    heuristics.check("warm up the character tables " * 10)
    results = {
        "heuristics": rate(lambda ds: [heuristics.check(d) for d in ds], many),
        "fasttext": rate(fasttext.predict, many),
        "deberta_v3_base_cpu_1_thread": deberta_base_rate(docs),
        "fasttext_target_docs_per_s": 5000,
        "note": "single core; fixture web documents average "
                f"{sum(len(d) for d in docs) / len(docs):,.0f} characters",
    }
    print(json.dumps(results, indent=1))
    write_results("quality", results)


if __name__ == "__main__":
    main()
