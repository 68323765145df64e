"""Generated bad input: readers and the config loader never crash and account for everything.

CI runs a fixed budget (the profile below); a longer local run: ZYDA2_FUZZ_EXAMPLES=5000 make test.
"""

from __future__ import annotations

import gzip
import os

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipelines.ingest.readers as readers
from pipelines.core.config import ConfigError, IngestConfig, load_config
from pipelines.core.sources import SourceFile
from pipelines.ingest.stage import ingest_file

FUZZ = settings(max_examples=int(os.environ.get("ZYDA2_FUZZ_EXAMPLES", 60)), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

INT64 = st.integers(-(2**63), 2**63 - 1)
json_values = st.recursive(st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=8)
records = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=200)}, optional={"url": json_values, "id": json_values}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    json_values,
)
# what real producers add: a BOM, CRLF, Python's NaN/Infinity literals, lone surrogate escapes
quirks = st.sampled_from([b"\xef\xbb\xbf", b"", b""]).flatmap(lambda bom: st.sampled_from([
    b'{"text": "a", "p": NaN}', b'{"text": "b", "p": -Infinity}', b'{"text": "\\ud800x"}', b'{"text": " \\u00a0"}',
    b'{"text": "c", "u": "\\udfff"}', b'{"text": "d"}\r']).map(lambda line: bom + line))
lines = st.lists(st.one_of(records.map(orjson.dumps), st.binary(max_size=60), quirks), max_size=12)


def _ingest(tmp_path, name: str, payload: bytes, fmt: str, source: str = "dclm",
            read_buffer: int | None = None) -> dict:
    path = tmp_path / name
    path.write_bytes(payload)
    sf = SourceFile(source, str(path), name, fmt, "dclm-gs01", 0)
    old = readers.READ_BUFFER
    readers.READ_BUFFER = read_buffer or old  # small buffers put member boundaries everywhere
    try:
        stats = ingest_file(sf, IngestConfig(batch_docs=4), tmp_path / "out")
    finally:
        readers.READ_BUFFER = old
    kept = pq.read_metadata(tmp_path / "out" / "ingest" / source / f"{sf.part_name}.parquet").num_rows
    assert stats["out"] == kept and stats["read"] == kept + stats["quarantined"]
    return stats


@FUZZ
@given(body=lines, fmt=st.sampled_from(["jsonl", "jsonl.zst", "jsonl.gz"]), cut=st.floats(0, 1),
       members=st.lists(st.integers(0, 400), max_size=3), read_buffer=st.sampled_from([None, 1, 2, 3, 5, 17, 64]))
def test_json_lines_readers_never_crash(tmp_path_factory, body, fmt, cut, members, read_buffer):
    tmp = tmp_path_factory.mktemp("fuzz")
    raw = b"\n".join(body)
    bounds = [0, *sorted(min(m, len(raw)) for m in members), len(raw)]
    parts = [raw[a:b] for a, b in zip(bounds, bounds[1:])]  # concatenated members, cut anywhere
    payload = {"jsonl": raw, "jsonl.zst": b"".join(zstandard.ZstdCompressor().compress(p) for p in parts),
               "jsonl.gz": b"".join(gzip.compress(p) for p in parts)}[fmt]
    payload = payload[: max(0, int(len(payload) * cut))] if cut < 0.5 else payload  # half the cases truncated
    stats = _ingest(tmp, "f." + fmt, payload, fmt, read_buffer=read_buffer)
    if cut >= 0.5 and (raw or fmt != "jsonl"):  # whole file: one record per line (a final newline ends the last)
        assert stats["read"] == raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
        assert "truncated_or_corrupt_file" not in stats["quarantine_reasons"]
    elif cut >= 0.5:
        assert stats["quarantine_reasons"] == {"empty_file": 1}


column_types = st.sampled_from([pa.string(), pa.large_string(), pa.int64(), pa.float64(), pa.binary(), pa.bool_(),
                                pa.large_binary(), pa.dictionary(pa.int8(), pa.string()),
                                pa.dictionary(pa.int32(), pa.large_string())])


@FUZZ
@given(n=st.integers(0, 12), text_type=st.one_of(st.none(), column_types), data=st.data())
def test_parquet_reader_never_crashes(tmp_path_factory, n, text_type, data):
    tmp = tmp_path_factory.mktemp("fuzzpq")
    columns = {"other": pa.array(data.draw(st.lists(INT64, min_size=n, max_size=n)), pa.int64())}
    if text_type is not None:
        strategy = {pa.string(): st.one_of(st.none(), st.text(max_size=50)),
                    pa.large_string(): st.one_of(st.none(), st.text(max_size=50)),
                    pa.int64(): st.one_of(st.none(), st.integers(-5, 5)),
                    pa.float64(): st.floats(allow_nan=True), pa.binary(): st.binary(max_size=10),
                    pa.large_binary(): st.binary(max_size=10), pa.bool_(): st.booleans(),
                    pa.dictionary(pa.int8(), pa.string()): st.sampled_from(["a", " ", "", None, "b c"]),
                    pa.dictionary(pa.int32(), pa.large_string()): st.one_of(st.none(), st.text(max_size=5))}[text_type]
        columns["text"] = pa.array(data.draw(st.lists(strategy, min_size=n, max_size=n)), text_type)
    path = tmp / "t.parquet"
    pq.write_table(pa.table(columns), path)
    stats = _ingest(tmp, "t.parquet", path.read_bytes(), "parquet", source="fwe")
    assert stats["read"] == n


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["ingest", "dedup", "ray", "sources", "bogus", "shards", "run_name"]),
                           json_values, max_size=3))
def test_config_loader_raises_only_config_errors(tmp_path_factory, doc):
    tmp = tmp_path_factory.mktemp("fuzzcfg")
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        load_config(path)
    except ConfigError as e:
        assert str(e)
