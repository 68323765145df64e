"""Tokenization throughput per core: our whole tokenize + write stage vs raw tokenizers and SentencePiece.

Text: the fixtures' documents (all four sources), tokenized with Mistral v0.1. Single core for all:
SentencePiece with num_threads=1, `tokenizers.encode_batch` with RAYON_NUM_THREADS=1 on a BPE
tokenizer built from the same SentencePiece model (byte fallback, dummy prefix), and ours: read
each partition, encode, split/anneal flags, write the token parquet, then write the Megatron shards.
The `tokenizers` path is also checked id-for-id against SentencePiece (the mismatch count is recorded).

  python -m benchmarks.tokenize           # writes benchmarks/results/tokenize.json
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers is imported

import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402

from benchmarks.common import DATA, REPO, write_results  # noqa: E402
from pipelines.config import ShardsConfig, TokenizeConfig, load_config  # noqa: E402
from pipelines.shards import tokenize_partition, write_shard  # noqa: E402
from pipelines.sources import discover  # noqa: E402
from pipelines.tokenizer import model_path  # noqa: E402

REPEAT = 2


def tokenizers_from_sentencepiece():
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import Tokenizer, decoders, models, normalizers
    proto = pb.ModelProto()
    proto.ParseFromString(model_path().read_bytes())
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    merges = sorted(((proto.pieces[i].score, vocab[p[:k]], vocab[p[k:]], p[:k], p[k:])
                     for p, i in vocab.items() if proto.pieces[i].type == 1
                     for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab),
                    key=lambda m: (-m[0], m[1], m[2]))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges], unk_token="<unk>",
                               fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok


def main() -> None:
    import sentencepiece as spm
    cfg = load_config(REPO / "configs" / "local.yaml", input_dir=str(DATA / "sources"))
    files = discover(cfg)
    work = Path(tempfile.mkdtemp(prefix="zyda2-bench-tok-"))
    try:
        from pipelines.ingest import ingest_file
        for sf in files:
            ingest_file(sf, cfg.ingest, work)
        parts = [(sf, work / "ingest" / sf.source / f"{sf.part_name}.parquet") for sf in files]
        texts = [t for _, p in parts for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]
        sp = spm.SentencePieceProcessor(model_file=str(model_path()))
        fast = tokenizers_from_sentencepiece()

        def best(fn):
            times = []
            for _ in range(REPEAT):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        ref = sp.encode(texts, num_threads=1)
        n_tokens = sum(map(len, ref))
        got = [e.ids for e in fast.encode_batch(texts, add_special_tokens=False)]
        mismatched = sum(a != b for a, b in zip(ref, got))

        def ours():
            shard_inputs = []
            for sf, path in parts:
                dest = work / "tok" / sf.source / path.name
                tokenize_partition(path, dest, sf.source, TokenizeConfig(), ShardsConfig(validation_fraction=0.01))
                shard_inputs.append(dest)
            write_shard(work / "shard" / "part_00000", shard_inputs, "train")

        t_sp = best(lambda: sp.encode(texts, num_threads=1))
        t_fast = best(lambda: fast.encode_batch(texts, add_special_tokens=False))
        t_ours = best(ours)
        mb = sum(len(t.encode()) for t in texts) / 1e6
        result = {
            "documents": len(texts), "text_mb": round(mb, 2), "tokens": n_tokens,
            "sentencepiece_tokens_per_s": round(n_tokens / t_sp),
            "tokenizers_encode_batch_tokens_per_s": round(n_tokens / t_fast),
            "ours_stage_tokens_per_s": round(n_tokens / t_ours),
            "ours_vs_raw_tokenizers": round(t_fast / t_ours, 3),
            "ours_vs_sentencepiece": round(t_sp / t_ours, 3),
            "tokenizers_documents_differing_from_sentencepiece": mismatched,
        }
        print(result)
        write_results("tokenize", result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
