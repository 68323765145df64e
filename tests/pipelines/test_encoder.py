"""The cached encoder gives SentencePiece's own ids: every fixture and ext document, generated strings.

The reference is a fresh `sentencepiece.SentencePieceProcessor` on the model file (with its dummy
prefix), never our code; any differing document fails.
"""

from __future__ import annotations

import functools
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.core.config import load_config
from pipelines.core.sources import INPUT_FOLDERS
from pipelines.ingest.discover import discover
from pipelines.ingest.stage import ingest_file
from pipelines.tokens.encoder import CachedEncoder, PreTokenizer, cached_encoder
from pipelines.tokens.tokenizer import BOS, EOS, model_path
from tests.conftest import REPO


@pytest.fixture(scope="module")
def reference():
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=str(model_path()))


def read_texts(sources, out) -> list[str]:
    """Every document text the readers produce from a folder laid out like shared/data/sources."""
    absent = [f"sources.{name}.enabled=false" for name, folder in INPUT_FOLDERS.items()
              if not (sources / folder).is_dir()]
    cfg = load_config(REPO / "configs" / "local.yaml", absent, input_dir=str(sources))
    texts = []
    for sf in discover(cfg):
        ingest_file(sf, cfg.ingest, out)
        column = pq.read_table(out / "ingest" / sf.source / f"{sf.part_name}.parquet", columns=["text"])["text"]
        for raw in column.cast(pa.binary()).to_pylist():
            try:  # ext/05's invalid UTF-8 is not text for any tokenizer (ingest quarantines it)
                texts.append(raw.decode())
            except UnicodeDecodeError:
                pass
    return texts


def assert_same_ids(texts, reference, cache_units=1_000_000):
    enc = CachedEncoder(cache_units)
    got = enc.encode(texts, append_eos=False)
    want = reference.encode(texts)
    bad = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
    assert len(got) == len(want) and not bad, f"{len(bad)} documents differ, first: {texts[bad[0]][:200]!r}"
    return enc


def test_every_fixture_document(data_dir, reference, tmp_path):
    texts = read_texts(data_dir / "sources", tmp_path)
    assert len(texts) == 2368
    enc = assert_same_ids(texts, reference)
    assert enc.hits > 3 * enc.misses  # most units of web text have been seen before


def test_every_ext_document(data_dir, reference, tmp_path):
    cases = sorted(p for p in (data_dir / "ext").iterdir() if (p / "sources").is_dir())
    texts = []
    for case in cases:
        texts += read_texts(case / "sources", tmp_path / case.name)
    assert len(cases) >= 10 and len(texts) > 300
    assert any("\u3000" in t or "日" in t for t in texts) and any("  " in t for t in texts)  # CJK, space runs
    assert_same_ids(texts, reference)


def test_a_tiny_cache_is_emptied_and_still_exact(data_dir, reference, tmp_path, monkeypatch):
    import pipelines.tokens.encoder
    monkeypatch.setattr(pipelines.tokens.encoder, "CHUNK_CHARS", 1)  # one document per chunk
    texts = read_texts(data_dir / "sources", tmp_path)[:300]
    enc = assert_same_ids(texts, reference, cache_units=500)
    assert enc.misses > 2 * 500               # the cache was emptied and refilled
    assert enc._rows <= 500 + max(len(set(enc.pre.units(t))) for t in texts)   # bounded memory


# ---- generated strings: every kind of character SentencePiece treats specially, in every order
ALPHABET = (
    [chr(c) for c in range(0x20, 0x7F)]                      # ASCII
    + [chr(c) for c in range(0x300, 0x370)]                 # combining marks
    + [chr(c) for c in range(0x590, 0x700)]                 # Hebrew, Arabic (RTL)
    + ["\u200e", "\u200f", "\u202a", "\u202e", "\u2066"]    # bidi controls
    + [chr(c) for c in range(0x00, 0x20)] + ["\x7f", "\x85"]  # C0 controls, DEL, NEL
    + [chr(c) for c in range(0x4E00, 0x4E60)] + ["。", "、", "ー", "カ", "한", "글"]  # CJK
    + ["🎉", "👍🏽", "👨\u200d👩\u200d👧", "𝄞", "\U0010FFFF", "\ufeff", "\u200b", "\u00a0", "\u3000", "\u2581",
       "\ufffd"]
    + ["é", "ß", "ø", "Ω", "я", "ñ", "²", "½", "ﬁ"]
)


def generated(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        if kind < 0.15:
            parts.append(rng.choice([" ", "\t", "\n", "\u2581", "\r\n"]) * rng.randint(1, 70))  # whitespace runs
        elif kind < 0.25:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 40))))                     # long numbers
        elif kind < 0.32:
            parts.append(rng.choice(["a", "ab", "xyz", "straße", "ф"]) * rng.randint(50, 800))  # very long words
        else:
            parts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 30))))
        parts.append(rng.choice(["", " ", "  ", "\n"]))
    return "".join(parts)


def test_generated_strings(reference):
    rng = random.Random(16)
    texts = [generated(rng) for _ in range(4000)]
    enc = assert_same_ids(texts, reference, cache_units=2000)
    # the compiled scan cuts exactly where the regex of the rule does
    joined = "".join(" " + t for t in texts if t)
    cps = np.frombuffer(joined.encode("utf-32-le"), np.uint32)
    _, start, end, _, doc_units = enc._scan(cps, np.cumsum([len(t) + 1 if t else 0 for t in texts]))
    assert [joined[a:b] for a, b in zip(start, end)] == [u for t in texts for u in enc.pre.units(t)]
    assert doc_units.tolist() == [len(enc.pre.units(t)) for t in texts]


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(st.lists(st.text(st.characters(codec="utf-8"), max_size=80), max_size=6))
def test_arbitrary_unicode(texts):
    # one small cache across all examples: it is emptied and refilled many times
    assert cached_encoder(50).encode(texts, append_eos=False) == _sentencepiece().encode(texts)


@functools.cache
def _sentencepiece():
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=str(model_path()))


def test_bos_eos_and_flat_offsets(reference):
    texts = ["Hello world", "", "  spaced  out  ", "日本語"]
    enc = CachedEncoder()
    ids, offsets = enc.encode_flat(texts, add_bos=True, append_eos=True)
    assert offsets[0] == 0 and offsets[-1] == len(ids) and len(offsets) == len(texts) + 1
    for k, text in enumerate(texts):
        assert ids[offsets[k]:offsets[k + 1]].tolist() == [BOS] + reference.encode(text) + [EOS]
    ids, offsets = enc.encode_flat([], add_bos=True)
    assert len(ids) == 0 and offsets.tolist() == [0]


def test_a_model_whose_piece_spans_a_cut_is_refused():
    """The cut rule is checked against the vocabulary: a piece with a space inside it would be split."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    proto = pb.ModelProto()
    proto.ParseFromString(model_path().read_bytes())
    PreTokenizer(proto)  # Mistral v0.1 itself passes
    proto.pieces[1000].piece = "of\u2581the"
    with pytest.raises(ValueError, match="spans a cut"):
        PreTokenizer(proto)
    proto.ParseFromString(model_path().read_bytes())
    proto.normalizer_spec.remove_extra_whitespaces = True
    with pytest.raises(ValueError, match="normaliser"):
        PreTokenizer(proto)
