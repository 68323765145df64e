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

from pipelines.config import ConfigError, IngestConfig, load_config
from pipelines.ingest import ingest_file
from pipelines.sources import SourceFile

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
lines = st.lists(st.one_of(records.map(orjson.dumps), st.binary(max_size=60)), max_size=12)


def _ingest(tmp_path, name: str, payload: bytes, fmt: str, source: str = "dclm") -> dict:
    path = tmp_path / name
    path.write_bytes(payload)
    sf = SourceFile(source, str(path), name, fmt, "dclm-gs01", 0)
    stats = ingest_file(sf, IngestConfig(batch_docs=4), tmp_path / "out")
    kept = pq.read_metadata(tmp_path / "out" / "ingest" / source / f"{sf.part_name}.parquet").num_rows
    assert stats["out"] == kept and stats["read"] == kept + stats["quarantined"]
    return stats


@FUZZ
@given(body=lines, fmt=st.sampled_from(["jsonl", "jsonl.zst", "jsonl.gz"]), cut=st.floats(0, 1))
def test_json_lines_readers_never_crash(tmp_path_factory, body, fmt, cut):
    tmp = tmp_path_factory.mktemp("fuzz")
    raw = b"\n".join(body)
    payload = {"jsonl": raw, "jsonl.zst": zstandard.ZstdCompressor().compress(raw),
               "jsonl.gz": gzip.compress(raw)}[fmt]
    payload = payload[: max(0, int(len(payload) * cut))] if cut < 0.5 else payload  # half the cases truncated
    stats = _ingest(tmp, "f." + fmt, payload, fmt)
    if cut >= 0.5:  # whole file: one record per line (a final newline ends the last line)
        assert stats["read"] == raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)


column_types = st.sampled_from([pa.string(), pa.large_string(), pa.int64(), pa.float64(), pa.binary(), pa.bool_()])


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
                    pa.bool_(): st.booleans()}[text_type]
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
