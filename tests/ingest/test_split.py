"""Large parquet files are ingested as pieces of whole row groups: the same documents, ids and products."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.core.config import load_config
from pipelines.core.schema import read_folder
from pipelines.core.sources import COMPONENTS
from pipelines.ingest.discover import discover
from pipelines.tokens.indexed_dataset import IndexedDataset
from tests.conftest import REPO, run_local

ONLY_PARQUET = ["sources.dclm.enabled=false", "sources.dolma-cc.enabled=false"]


@pytest.fixture(scope="module")
def many_row_groups(data_dir, tmp_path_factory) -> Path:
    """The fixtures' parquet sources rewritten with 30-row row groups (a real file has ~100 MB ones)."""
    root = tmp_path_factory.mktemp("row-groups")
    for folder in ("zyda", "fineweb-edu"):
        for path in sorted((data_dir / "sources" / folder).rglob("*.parquet")):
            dest = root / path.relative_to(data_dir / "sources")
            dest.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pq.read_table(path), dest, row_group_size=30)
    return root


def test_pieces_cover_every_row_group_once_in_order(many_row_groups, tmp_path):
    cfg = load_config(REPO / "configs" / "local.yaml", [*ONLY_PARQUET, "ingest.split_mb=0.05"],
                      input_dir=str(many_row_groups), output_dir=str(tmp_path))
    whole = load_config(REPO / "configs" / "local.yaml", [*ONLY_PARQUET, "ingest.split_mb=null"],
                        input_dir=str(many_row_groups), output_dir=str(tmp_path))
    pieces, files = discover(cfg), discover(whole)
    assert len(pieces) > len(files) and all(sf.piece is None for sf in files)
    assert len({sf.part_name for sf in pieces}) == len(pieces)
    for sf in files:
        mine = [p for p in pieces if p.rel == sf.rel]
        meta = pq.ParquetFile(sf.url).metadata
        assert mine[0].piece.first_group == 0 and mine[-1].piece.end_group == meta.num_row_groups
        for a, b in zip(mine, mine[1:]):
            assert a.piece.end_group == b.piece.first_group
            assert b.piece.first_row == a.piece.first_row + sum(
                meta.row_group(i).num_rows for i in range(a.piece.first_group, a.piece.end_group))
        assert {(p.id_prefix, p.partition) for p in mine} == {(sf.id_prefix, sf.partition)}


def test_a_split_run_keeps_the_same_documents_ids_and_tokens(ray_instance, many_row_groups, tmp_path):
    runs = {}
    for name, split in (("whole", "null"), ("pieces", "0.05")):
        out = tmp_path / name
        runs[name] = (out, run_local(out, many_row_groups, [*ONLY_PARQUET, f"ingest.split_mb={split}"]))
    (whole, rw), (split, rs) = runs["whole"], runs["pieces"]
    assert len(list((split / "ingest" / "_done").iterdir())) > len(list((whole / "ingest" / "_done").iterdir()))
    assert rs["sources"] == rw["sources"] and rs["totals"] == rw["totals"]  # accounting per source unchanged
    for source in ("zyda", "fwe"):
        cols = ["nemo_id", "src_file", "src_row", "text", "quality_prob"]
        a = read_folder(whole / "quality_filter" / source, cols)
        b = read_folder(split / "quality_filter" / source, cols)
        assert a.equals(b)  # same documents, ids, provenance and scores, in the same order
    dec = {name: pq.read_table(out / "dedup" / "decisions").sort_by("nemo_id") for name, (out, _) in runs.items()}
    assert dec["whole"].equals(dec["pieces"])
    for component in (COMPONENTS["zyda"], COMPONENTS["fwe"]):
        streams = []
        for out in (whole, split):
            shards = sorted((out / "shards" / component / "train").glob("*.idx"))
            docs = [IndexedDataset(p.with_suffix("")) for p in shards]
            streams.append(np.concatenate([d[i] for d in docs for i in range(len(d))]))
        assert np.array_equal(*streams)


def test_a_corrupt_row_group_quarantines_the_rest_with_its_bytes(data_dir, tmp_path):
    """The reader's unread-bytes path (a footer that reads, a row group that does not), whole and in pieces."""
    from pipelines.core.sources import Piece
    from pipelines.ingest.readers import ArrowBatch, Bad, compressed_bytes, read_parquet
    path = tmp_path / "corrupt.parquet"
    pq.write_table(pq.read_table(data_dir / "sources" / "zyda" / "zyda_c4-en" / "train-00000-of-00001.parquet"),
                   path, row_group_size=50, compression="zstd")
    meta = pq.ParquetFile(path).metadata
    text = meta.row_group(2).column(meta.schema.to_arrow_schema().get_field_index("text"))
    data = bytearray(path.read_bytes())
    start = text.data_page_offset
    data[start + 40: start + 4000] = b"\xff" * 3960  # inside the third row group's text pages
    path.write_bytes(bytes(data))
    lost = sum(compressed_bytes(meta.row_group(i)) for i in (2, 3))
    events = list(read_parquet(str(path), 1000))
    assert sum(e.batch.num_rows for e in events if isinstance(e, ArrowBatch)) <= 100
    bad = [e for e in events if isinstance(e, Bad)]
    assert len(bad) == 1 and bad[0].reason.startswith("unreadable_parquet") and bad[0].unread_bytes >= lost // 2
    events = list(read_parquet(str(path), 1000, piece=Piece(2, 4, 100)))
    bad = [e for e in events if isinstance(e, Bad)]
    assert len(bad) == 1 and bad[0].row == 100 and bad[0].unread_bytes == lost
    assert [e.start_row for e in read_parquet(str(path), 1000, piece=Piece(1, 2, 50))] == [50]
