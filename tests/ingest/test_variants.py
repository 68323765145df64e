"""Generated variants of each kind of real-world input: string encodings, invalid UTF-8 anywhere,
JSON-lines quirks, native type drift, blank text. Each goes through `ingest_file` as a run does."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipelines.core.config import IngestConfig
from pipelines.core.sources import SourceFile
from pipelines.ingest.normalise import Normaliser, invalid_utf8_rows
from pipelines.ingest.stage import ingest_file

TEXTS = ["first document, plain ASCII", "zweites Dokument: Grüße", "第三个文档", "emoji \U0001F600 and \u200d joiner",
         "fifth", "sixth one\nwith a newline"]


def ingest(tmp_path, name: str, payload: bytes, fmt: str, source: str = "fwe", batch_docs: int = 4):
    path = tmp_path / name
    path.write_bytes(payload)
    sf = SourceFile(source, str(path), name, fmt, "p", 0)
    stats = ingest_file(sf, IngestConfig(batch_docs=batch_docs), tmp_path / "out")
    docs = pq.read_table(tmp_path / "out" / "ingest" / source / f"{sf.part_name}.parquet").to_pandas()
    q_path = tmp_path / "out" / "quarantine" / f"{source}__{sf.part_name}.parquet"
    quarantine = pq.read_table(q_path).to_pandas() if q_path.exists() else None
    assert (stats["read"] == stats["out"] + stats["quarantined"]
            == len(docs) + (0 if quarantine is None else len(quarantine)))
    return stats, docs, quarantine


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


STRING_ENCODINGS = {
    "string": lambda v: pa.array(v, pa.string()),
    "large_string": lambda v: pa.array(v, pa.large_string()),
    "string_view": lambda v: pa.array(v, pa.string_view()),
    "dictionary<string,int8>": lambda v: pa.array(v, pa.string()).dictionary_encode().cast(
        pa.dictionary(pa.int8(), pa.string())),
    "dictionary<string,int32>": lambda v: pa.array(v, pa.string()).dictionary_encode(),
    "dictionary<large_string,int16>": lambda v: pa.array(v, pa.large_string()).dictionary_encode().cast(
        pa.dictionary(pa.int16(), pa.large_string())),
    "binary": lambda v: pa.array([None if t is None else t.encode() for t in v], pa.binary()),
    "large_binary": lambda v: pa.array([None if t is None else t.encode() for t in v], pa.large_binary()),
    "binary_view": lambda v: pa.array([None if t is None else t.encode() for t in v], pa.binary_view()),
}


@pytest.mark.parametrize("encoding", sorted(STRING_ENCODINGS))
def test_every_arrow_string_encoding_gives_the_same_documents(encoding):
    """In memory (what any reader hands over) — all nine encodings give the plain-string outcome."""
    values = TEXTS + [None, "", " \u00a0\u3000\t"]
    batch = pa.record_batch({"text": STRING_ENCODINGS[encoding](values), "id": pa.array(range(len(values)))})
    norm = Normaliser(SourceFile("fwe", "/x", "x.parquet", "parquet", "p", 0), 200)
    norm.add_arrow(0, batch)
    out = pa.Table.from_batches(norm.take_batches())
    assert out.column("text").to_pylist() == TEXTS
    assert out.column("native_id").to_pylist() == [str(i) for i in range(len(TEXTS))]
    q = norm.take_quarantine().to_pydict()
    assert [r.split(":")[0] for r in q["reason"]] == ["null_text", "empty_text", "blank_text"]
    assert q["src_row"] == [6, 7, 8]


@pytest.mark.parametrize("encoding", ["string", "large_string", "dictionary<string,int8>", "binary", "large_binary"])
def test_parquet_string_encodings_round_trip(tmp_path, encoding):
    table = pa.table({"text": STRING_ENCODINGS[encoding](TEXTS), "int_score": pa.array([3] * len(TEXTS))})
    stats, docs, quarantine = ingest(tmp_path, "t.parquet", _parquet(table), "parquet")
    assert list(docs.text) == TEXTS and quarantine is None


def _invalid_column(texts: list[bytes], large: bool) -> pa.Array:
    """A UTF8-annotated column holding arbitrary bytes, as some producers write (pyarrow does not validate)."""
    binary = pa.array(texts, pa.large_binary() if large else pa.binary())
    return binary.view(pa.large_string() if large else pa.string())


@pytest.mark.parametrize("seed", range(6))
def test_invalid_utf8_quarantines_exactly_its_rows(tmp_path, seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    bad = sorted(rng.sample(range(n), rng.randint(1, min(n, 5))))
    cuts = [b"\xff\xfe", b"caf\xe9", b"\xe2\x82", b"\xed\xa0\x80 (a UTF-8-encoded surrogate)", b"\xc0\xaf"]
    values = [(f"row {i} ".encode() + rng.choice(cuts) if i in bad else f"row {i} fine ✓".encode()) for i in range(n)]
    large = seed % 2 == 1
    table = pa.table({"text": _invalid_column(values, large), "url": pa.array([f"u{i}" for i in range(n)])})
    stats, docs, quarantine = ingest(tmp_path, "t.parquet", _parquet(table), "parquet",
                                     batch_docs=rng.choice([3, 8, 64]))
    assert list(quarantine.src_row) == bad
    assert quarantine.reason.str.match(r"invalid_utf8: byte \d+ of 'text'").all()
    assert list(docs.src_row) == [i for i in range(n) if i not in bad]
    assert list(docs.text) == [values[i].decode() for i in range(n) if i not in bad]


def test_bisection_finds_every_invalid_value():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 300))
        bad = set(rng.choice(n, size=int(rng.integers(0, min(n, 9) + 1)), replace=False).tolist())
        col = _invalid_column([b"\x80" if i in bad else b"ok" for i in range(n)], False)
        assert invalid_utf8_rows(col) == sorted(bad)


def test_invalid_utf8_in_a_metadata_column_keeps_the_document(tmp_path):
    table = pa.table({"text": TEXTS[:3], "url": _invalid_column([b"http://a/\xff", b"http://b", None], False)})
    stats, docs, quarantine = ingest(tmp_path, "t.parquet", _parquet(table), "parquet")
    assert quarantine is None and list(docs.text) == TEXTS[:3]
    assert list(docs.url[:2]) == ["http://a/\ufffd", "http://b"] and docs.url.isna()[2]
    assert stats["typed_nulls"] == {"url:invalid_utf8_replaced": 1}


def _compress(fmt: str, parts: list[bytes]) -> bytes:
    """Each part its own gzip member / zstd frame (as `cat a.gz b.gz` makes)."""
    if fmt == "jsonl":
        return b"".join(parts)
    if fmt == "jsonl.gz":
        return b"".join(gzip.compress(p) for p in parts)
    return b"".join(zstandard.ZstdCompressor().compress(p) for p in parts)


QUIRKY_LINES = [
    b'\xef\xbb\xbf{"text": "after a BOM", "url": "u0"}',
    b'{"text": "crlf line", "url": "u1"}\r',
    b'{"text": "nan prob", "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob": NaN}',
    b'{"text": "inf prob", "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob": Infinity, '
    b'"x": -Infinity}',
    b'{"text": "pair \\ud83d\\ude00 ok"}',
    b'{"text": "lone \\ud83d here"}',
    b'{"text": "lone low \\ude00"}',
    b'{"text": "surrogate in url only", "url": "http://x/\\udc80"}',
    b'{"text": "big int", "n": 123456789012345678901234567890}',
    b'{"text": "\\u00a0\\u2003\\u3000 "}',
    b'{"text": NaN}',
    b'{"text": "string prob", "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob": "0.25"}',
]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst"])
def test_json_lines_as_producers_write_them(tmp_path, fmt):
    body = b"\n".join(QUIRKY_LINES[:6]) + b"\r\n"
    second = b"\xef\xbb\xbf" + b"\n".join(QUIRKY_LINES[6:]) + b"\n"  # a concatenated part with its own BOM
    stats, docs, q = ingest(tmp_path, f"f.{fmt}", _compress(fmt, [body, second]), fmt, source="dclm")
    assert list(q.src_row) == [5, 6, 9, 10]
    assert list(q.reason.str.split(":").str[0]) == ["lone_surrogate", "lone_surrogate", "blank_text", "text_not_string"]
    assert q.reason[0] == "lone_surrogate: U+D83D without its pair at character 5 of 'text'"
    d = docs.set_index("src_row")
    assert d.loc[0, "text"] == "after a BOM" and d.loc[1, "url"] == "u1"
    assert d.loc[4, "text"] == "pair \U0001F600 ok"
    assert d.loc[7, "url"] == "http://x/\ufffd"
    assert d.loc[8, "text"] == "big int"  # orjson reads integers beyond 64 bits as float; the document stays
    prob = "fasttext_openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train_prob"
    assert np.isnan(d.loc[2, "dclm_fasttext_prob"]) and json.loads(d.loc[2, "metadata"])[prob] == "NaN"
    assert json.loads(d.loc[3, "metadata"]) == {prob: "Infinity", "x": "-Infinity"}
    assert d.loc[11, "dclm_fasttext_prob"] == 0.25
    assert stats["typed_nulls"] == {"dclm_fasttext_prob:non_finite": 2}


# int_score / score as different producers and dumps store them
DRIFT = {
    "int64": (pa.array([3, 4, 2], pa.int64()), [3, 4, 2], {}),
    "int32": (pa.array([3, 4, 2], pa.int32()), [3, 4, 2], {}),
    "int8": (pa.array([3, 4, 2], pa.int8()), [3, 4, 2], {}),
    "double": (pa.array([3.0, 4.0, 2.0]), [3, 4, 2], {}),
    "double with a fraction and NaN": (pa.array([3.0, 3.5, float("nan")]), [3, None, None],
                                       {"int_score:non_integral": 1, "int_score:non_finite": 1}),
    "string": (pa.array(["3", "4.0", "high"]), [3, 4, None], {"int_score:not_a_number": 1}),
    "decimal": (pa.array([3, 4, 2], pa.decimal128(5, 2)), [3, 4, 2], {}),
    "nulls": (pa.array([None, 4, None], pa.int64()), [None, 4, None], {}),
}


@pytest.mark.parametrize("kind", sorted(DRIFT))
def test_native_type_drift_casts_or_names_the_null(tmp_path, kind):
    column, expected, nulls = DRIFT[kind]
    score = pa.array([2.5, 3.25, 1.0], pa.float32() if "int" in kind else pa.float64())
    table = pa.table({"text": ["a doc", "b doc", "c doc"], "int_score": column, "score": score, "id": ["x", "y", "z"]})
    stats, docs, q = ingest(tmp_path, "t.parquet", _parquet(table), "parquet")
    assert q is None and len(docs) == 3  # never a document lost for a metadata type
    assert [None if v != v else int(v) for v in docs.int_score] == expected
    assert list(docs.edu_score) == [2.5, 3.25, 1.0]
    assert stats["typed_nulls"] == nulls
    for doc, exp, raw in zip(docs.itertuples(), expected, column.to_pylist()):
        if exp is None and raw is not None:  # what could not be cast stays readable in metadata
            assert "int_score" in json.loads(doc.metadata)


def test_missing_optional_columns_give_nulls(tmp_path):
    stats, docs, q = ingest(tmp_path, "t.parquet", _parquet(pa.table({"text": ["only text"]})), "parquet")
    assert q is None and docs.int_score.isna().all() and docs.url.isna().all() and stats["typed_nulls"] == {}


def test_policy_sees_the_same_numbers_whatever_the_type(tmp_path):
    """`int_score >= 3` must select the same rows from an int64 dump and a double dump."""
    scores = [1, 2, 3, 4, 5, 3]
    picks = []
    for i, column in enumerate([pa.array(scores, pa.int64()), pa.array(scores, pa.int32()),
                                pa.array([float(s) for s in scores]), pa.array([str(s) for s in scores])]):
        sub = tmp_path / str(i)
        sub.mkdir()
        table = pa.table({"text": [f"doc {j}" for j in range(len(scores))], "int_score": column})
        _, docs, _ = ingest(sub, "t.parquet", _parquet(table), "parquet")
        picks.append(list(docs[docs.int_score >= 3].src_row))
    assert all(p == [2, 3, 4, 5] for p in picks)


@pytest.mark.parametrize("space", [" ", "\t\n\r", "\u00a0", "\u2003", "\u3000", "\u2028", "\u0085", "\u1680 \u205f"])
def test_blank_text_is_quarantined_the_same_in_json_and_parquet(tmp_path, space):
    (tmp_path / "j").mkdir()
    (tmp_path / "p").mkdir()
    _, _, qj = ingest(tmp_path / "j", "f.jsonl", orjson.dumps({"text": space}) + b"\n" +
                      orjson.dumps({"text": space + "x"}) + b"\n", "jsonl", source="dclm")
    _, _, qp = ingest(tmp_path / "p", "t.parquet", _parquet(pa.table({"text": [space, space + "x"]})), "parquet")
    assert list(qj.reason) == list(qp.reason) == ["blank_text: 'text' holds only whitespace"]


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst"])
def test_invalid_utf8_outside_text_keeps_the_document(tmp_path, fmt):
    lines = [b'{"text": "fine", "url": "http://x/caf\xe9"}', b'{"text": "bad caf\xe9", "url": "u"}',
             b'{"text": "also fine", "title": "\xff\xfe", "p": NaN}']
    stats, docs, q = ingest(tmp_path, f"f.{fmt}", _compress(fmt, [b"\n".join(lines) + b"\n"]), fmt, source="dclm")
    assert list(q.src_row) == [1] and q.reason[0] == "invalid_utf8: byte 17 of the line"
    assert list(docs.text) == ["fine", "also fine"] and docs.url[0] == "http://x/caf\ufffd"
    assert json.loads(docs.metadata[1]) == {"title": "\ufffd\ufffd", "p": "NaN"}


def test_non_finite_parquet_metadata_stays_readable(tmp_path):
    table = pa.table({"text": ["a", "b"], "score": [float("nan"), 2.5], "other": [float("inf"), 1.0]})
    stats, docs, q = ingest(tmp_path, "t.parquet", _parquet(table), "parquet")
    assert json.loads(docs.metadata[0]) == {"score": "NaN", "other": "Infinity"} and docs.edu_score.isna()[0]
    assert stats["typed_nulls"] == {"edu_score:non_finite": 1}
