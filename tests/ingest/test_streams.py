"""Compressed streams decode the same whatever the read-buffer size; padding, trailing bytes, empty
members and 0-byte files are named; a reader that loses a line is caught by the independent count."""

from __future__ import annotations

import gzip

import orjson
import pytest
import zstandard

import pipelines.ingest.readers as readers
from pipelines.ingest.readers import Bad, CountMismatch, JsonRecord, read_json_lines

LINES = [orjson.dumps({"text": f"record {i} " + "x" * (i * 7 % 23)}) for i in range(9)]


def _members(fmt: str, parts: list[bytes]) -> bytes:
    if fmt == "jsonl.gz":
        return b"".join(gzip.compress(p, mtime=0) for p in parts)
    return b"".join(zstandard.ZstdCompressor().compress(p) for p in parts)


def _read(tmp_path, payload: bytes, fmt: str, buffer: int) -> list:
    path = tmp_path / f"f.{fmt}"
    path.write_bytes(payload)
    return list(read_json_lines(str(path), fmt, read_buffer=buffer))


def _texts(events) -> list[str]:
    return [e.obj["text"] for e in events if isinstance(e, JsonRecord)]


SPLITS = [  # how the lines are cut into members: at line ends, mid-line, and with empty members
    [b"\n".join(LINES[:3]) + b"\n", b"\n".join(LINES[3:]) + b"\n"],
    [b"\n".join(LINES)[:50], b"\n".join(LINES)[50:130], b"\n".join(LINES)[130:] + b"\n"],
    [b"", b"\n".join(LINES[:4]) + b"\n", b"", b"", b"\n".join(LINES[4:]) + b"\n", b""],
]


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
@pytest.mark.parametrize("split", range(len(SPLITS)))
def test_every_member_boundary_position_decodes_the_same(tmp_path, fmt, split):
    """Every read-buffer size from 1 byte to past the file: each member boundary falls at every
    position relative to a read boundary (before, on, after, inside the magic number)."""
    payload = _members(fmt, SPLITS[split])
    expected = [orjson.loads(line)["text"] for line in LINES]
    for buffer in range(1, len(payload) + 2):
        events = _read(tmp_path, payload, fmt, buffer)
        assert _texts(events) == expected and len(events) == len(LINES), buffer


def test_zstd_skippable_frames_are_passed_over(tmp_path):
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    payload = skippable + _members("jsonl.zst", [b"\n".join(LINES) + b"\n"]) + skippable
    for buffer in (1, 3, 7, 1 << 20):
        assert len(_texts(_read(tmp_path, payload, "jsonl.zst", buffer))) == len(LINES)


@pytest.mark.parametrize("buffer", [1, 2, 5, 64, 1 << 20])
def test_zero_padding_after_gzip_members_is_not_an_error(tmp_path, buffer):
    parts = [b"\n".join(LINES[:5]) + b"\n", b"\n".join(LINES[5:]) + b"\n"]
    payload = gzip.compress(parts[0]) + b"\0" * 37 + gzip.compress(parts[1]) + b"\0" * 512
    events = _read(tmp_path, payload, "jsonl.gz", buffer)
    assert len(_texts(events)) == len(LINES) and not [e for e in events if isinstance(e, Bad)]


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
@pytest.mark.parametrize("garbage", [b"x", b"GARBAGE AFTER THE END", b"\0\0\x01\x02", b"\x1f\x00"])
def test_trailing_garbage_is_named_as_such(tmp_path, fmt, garbage):
    payload = _members(fmt, [b"\n".join(LINES) + b"\n"]) + garbage
    for buffer in (1, 4, 1 << 20):
        events = _read(tmp_path, payload, fmt, buffer)
        assert len(_texts(events)) == len(LINES)
        bad = [e for e in events if isinstance(e, Bad)]
        assert len(bad) == 1 and bad[0].reason.startswith("trailing_bytes: trailing bytes after the last member")
        expected_unread = len(garbage.lstrip(b"\0")) if fmt == "jsonl.gz" else len(garbage)
        assert bad[0].unread_bytes == expected_unread and f"{expected_unread} bytes" in bad[0].reason


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_a_cut_next_header_is_truncation(tmp_path, fmt):
    payload = _members(fmt, [b"\n".join(LINES) + b"\n"]) + (b"\x1f" if fmt == "jsonl.gz" else b"\x28\xb5")
    bad = [e for e in _read(tmp_path, payload, fmt, 3) if isinstance(e, Bad)]
    assert len(bad) == 1 and "ends inside the header of a" in bad[0].reason


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_truncation_is_not_trailing_garbage(tmp_path, fmt):
    payload = _members(fmt, [b"\n".join(LINES) + b"\n"])
    for cut in range(1, len(payload)):
        events = _read(tmp_path, payload[:cut], fmt, 16)
        bad = [e for e in events if isinstance(e, Bad)]
        assert len(bad) == 1 and bad[0].reason.startswith(("truncated_or_corrupt_file", "empty_file")), cut
        assert bad[0].row == len(events) - 1  # the rest of the file: after every complete line


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst", "parquet"])
def test_zero_byte_files_are_named(tmp_path, fmt):
    path = tmp_path / f"f.{fmt}"
    path.write_bytes(b"")
    events = list(readers.read_parquet(str(path), 8) if fmt == "parquet" else read_json_lines(str(path), fmt))
    assert [(type(e), e.reason) for e in events] == [(Bad, "empty_file: the file has 0 bytes")]


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_only_empty_members_give_no_record(tmp_path, fmt):
    assert _read(tmp_path, _members(fmt, [b"", b""]), fmt, 3) == []


def test_a_reader_that_loses_a_line_fails_loudly(tmp_path, monkeypatch):
    real = readers._lines

    def lossy(chunks, partial=None):
        for i, line in enumerate(real(chunks, partial)):
            if i != 4:
                yield line
    monkeypatch.setattr(readers, "_lines", lossy)
    with pytest.raises(CountMismatch, match="emitted 8 lines but the decompressed stream holds 9"):
        _read(tmp_path, _members("jsonl.zst", [b"\n".join(LINES)]), "jsonl.zst", 1 << 20)


def test_old_single_decoder_loop_would_lose_records(tmp_path):
    """The kind of ext case 01: a frame ends exactly on a read boundary. A decoder fed past its
    frame's end errors; the count check and the boundary handling keep every record."""
    first = zstandard.ZstdCompressor().compress(b"\n".join(LINES[:4]) + b"\n")
    payload = first + zstandard.ZstdCompressor().compress(b"\n".join(LINES[4:]) + b"\n")
    d = zstandard.ZstdDecompressor().decompressobj()
    d.decompress(payload[: len(first)])
    with pytest.raises(zstandard.ZstdError):
        d.decompress(payload[len(first):])
    assert len(_texts(_read(tmp_path, payload, "jsonl.zst", len(first)))) == len(LINES)


def test_corrupt_middle_reports_the_unread_bytes(tmp_path):
    good = gzip.compress(b"\n".join(LINES[:3]) + b"\n")
    bad_member = bytearray(gzip.compress(b"\n".join(LINES[3:]) + b"\n"))
    bad_member[12:20] = b"\xff" * 8
    payload = good + bytes(bad_member)
    events = _read(tmp_path, payload, "jsonl.gz", 1 << 20)
    bad = [e for e in events if isinstance(e, Bad)]
    assert len(bad) == 1 and bad[0].reason.startswith("truncated_or_corrupt_file: error")
    assert 0 < bad[0].unread_bytes <= len(bad_member)


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_a_file_that_is_not_compressed_is_named(tmp_path, fmt):
    events = _read(tmp_path, b"\n".join(LINES), fmt, 8)
    assert len(events) == 1 and events[0].reason.startswith("truncated_or_corrupt_file: NotCompressed: not a ")


def test_a_cut_parquet_file_names_its_unread_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(100)]}), path, row_group_size=10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    events = list(readers.read_parquet(str(path), 8))
    assert (len(events) == 1 and events[0].reason.startswith("unreadable_parquet")
            and events[0].unread_bytes == len(data) // 2)
