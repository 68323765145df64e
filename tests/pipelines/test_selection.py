"""Documents are written once: later stages store selections (src_row + added columns) of them."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.outputs import write_table
from pipelines.core.schema import (
    SELECTION_OF,
    document_columns,
    documents_file,
    read_docs,
    read_documents,
    read_folder,
    selection,
)


def _ingested(local_run) -> tuple[Path, pa.Table]:
    out, _ = local_run
    path = sorted((out / "ingest" / "zyda").glob("*.parquet"))[0]
    return path, pq.read_table(path)


def test_a_selection_reads_back_as_the_rows_it_kept(local_run, tmp_path):
    base, docs = _ingested(local_run)
    keep = np.arange(docs.num_rows) % 3 != 1
    kept = docs.filter(pa.array(keep))
    kept = kept.append_column("score", pa.array(np.arange(kept.num_rows, dtype=np.float64)))
    dest = tmp_path / "stage" / "zyda" / base.name
    write_table(dest, selection(kept, base, dest))
    assert pq.read_schema(dest).names == ["src_file", "src_row", "score"]  # no text
    assert documents_file(dest).resolve() == base.resolve()
    assert read_documents(dest).equals(kept)
    assert read_documents(dest, ["score", "nemo_id"]).equals(kept.select(["score", "nemo_id"]))
    assert document_columns(dest) == kept.column_names
    # a selection of a selection still points at the text, and drops nothing but rows
    again = read_documents(dest).slice(1, 5)
    dest2 = tmp_path / "later" / "zyda" / base.name
    write_table(dest2, selection(again, documents_file(dest), dest2))
    assert read_documents(dest2).equals(again)
    assert read_docs(dest2, ["nemo_id", "quality_prob"]).column("quality_prob").null_count == 5


def test_a_selection_of_another_runs_rows_fails_in_one_line(local_run, tmp_path):
    base, docs = _ingested(local_run)
    dest = tmp_path / "stage" / "zyda" / base.name
    bogus = pa.table({"src_file": docs.column("src_file").slice(0, 1),
                      "src_row": pa.array([docs.num_rows + 10**6], pa.int64())})
    write_table(dest, bogus.replace_schema_metadata({SELECTION_OF: str(base.resolve()).encode()}))
    with pytest.raises(ValueError, match="does not hold"):
        read_documents(dest)
    with pytest.raises(KeyError, match="no column 'nope'"):
        read_documents(dest, ["nope"])


def test_the_run_writes_the_text_once(local_run):
    """Stages after ingest hold a few bytes per document, not a copy of the text."""
    out, report = local_run
    text_bytes = sum(pq.read_table(p, columns=["text"]).column("text").nbytes
                     for p in (out / "ingest").glob("*/*.parquet"))
    for stage in ("dedup", "quality_filter"):  # the recipe's heuristics apply to no source
        files = list((out / stage).glob("*/*.parquet"))
        assert files, stage
        assert sum(p.stat().st_size for p in files) < 0.01 * text_bytes, stage
        assert all("text" not in pq.read_schema(p).names for p in files)
    # and what they select is what the report says each stage kept
    for source, row in report["sources"].items():
        last = "dedup" if source == "dclm" else "quality_filter"
        assert read_folder(out / last / source, ["nemo_id"]).num_rows == row["kept"]
