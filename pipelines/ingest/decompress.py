"""Compressed JSON-lines streams: gzip members and zstd frames decoded chunk by chunk.

`decompressed_chunks` yields every byte that decoded before a truncation or corruption is raised
(a buffered reader would lose the complete lines just before it), and keeps the figures the readers
check their own counts against (`StreamStats`: compressed bytes read and consumed, newlines seen).
Multi-member gzip and multi-frame zstd decode the same whatever the read size is.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterator

import zstandard

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class TruncatedStream(EOFError):
    """The compressed stream ended before its end-of-stream marker."""


class NotCompressed(ValueError):
    """The file does not start with the magic number of its format."""


class TrailingBytes(ValueError):
    """Bytes after the last complete gzip member / zstd frame that do not start another one."""


@dataclass
class StreamStats:
    """Figures taken apart from the line parser: compressed bytes read and consumed, newlines seen."""
    size: int | None = None    # on-disk size when the file system gives it
    read: int = 0              # compressed bytes read from the file
    consumed: int = 0          # compressed bytes accepted by the decoder (complete members + current one)
    newlines: int = 0          # b"\n" in the decompressed stream
    last_byte: bytes = b""     # last decompressed byte (an unterminated last line is a record too)
    members: int = 0           # complete gzip members / zstd frames
    padding: int = 0           # zero bytes between or after gzip members (allowed, as gzip(1) does)


def _member_start(fmt: str, head: bytes) -> bool:
    if fmt == "jsonl.gz":
        return head[:2] == GZIP_MAGIC
    # a zstd frame, or a skippable frame (magic 0x184D2A5?, little-endian)
    return head[:4] == ZSTD_MAGIC or (head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50)


def decompressed_chunks(raw, fmt: str, st: StreamStats, read_buffer: int) -> Iterator[bytes]:
    """Decompressed bytes in chunks, yielding everything that decoded before a truncation or
    corruption is raised (a buffered line reader would lose the complete lines just before it).

    Multi-member gzip and multi-frame zstd decode the same whatever `read_buffer` is: a new decoder
    starts wherever the previous member ended, also exactly at a read boundary."""
    def count(out: bytes) -> bytes:
        if out:
            st.newlines += out.count(b"\n")
            st.last_byte = out[-1:]
        return out

    if fmt == "jsonl":
        while chunk := raw.read(read_buffer):
            st.read += len(chunk)
            st.consumed += len(chunk)
            yield count(chunk)
        if not st.read:
            raise TruncatedStream("the file has 0 bytes")
        return
    new = (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)) if fmt == "jsonl.gz" \
        else (lambda: zstandard.ZstdDecompressor().decompressobj())
    need = 2 if fmt == "jsonl.gz" else 4
    d, pending = None, b""
    while True:
        chunk = raw.read(read_buffer)
        st.read += len(chunk)
        data, pending = pending + chunk, b""
        while data:
            if d is None or d.eof:  # at a member boundary
                if d is not None:
                    st.members += 1
                    d = None
                if fmt == "jsonl.gz" and st.members:
                    stripped = data.lstrip(b"\0")
                    st.padding += len(data) - len(stripped)
                    st.consumed += len(data) - len(stripped)
                    data = stripped
                    if not data:
                        break
                if len(data) < need and chunk:
                    pending = data  # a magic number split by the read boundary
                    break
                if not _member_start(fmt, data):
                    kind = "gzip member" if fmt == "jsonl.gz" else "zstd frame"
                    if len(data) < need and (GZIP_MAGIC if fmt == "jsonl.gz" else ZSTD_MAGIC).startswith(data):
                        raise TruncatedStream(f"the file ends inside the header of a {kind}")
                    if not st.members:
                        raise NotCompressed(f"not a {kind}: the file starts with bytes {data[:4].hex()}")
                    rest = len(data) + sum(len(c) for c in iter(lambda: raw.read(read_buffer), b""))
                    st.read += rest - len(data)
                    raise TrailingBytes(f"trailing bytes after the last member: {rest} bytes that do not start "
                                        f"a {kind}")
                d = new()
            before = len(data)
            out = d.decompress(data)
            data = d.unused_data if d.eof else b""
            st.consumed += before - len(data)
            yield count(out)
        if not chunk:
            break
    if d is None and st.members == 0:
        raise TruncatedStream("the file has 0 bytes")
    if d is not None and not d.eof:
        raise TruncatedStream("compressed stream ended before its end-of-stream marker")
    if d is not None:
        st.members += 1
