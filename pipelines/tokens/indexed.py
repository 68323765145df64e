"""Write one Megatron indexed shard (`<prefix>.bin` + `<prefix>.idx`; the format and the reader are in
`pipelines.tokens.indexed_dataset`)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from pipelines.core.outputs import atomic_path, temp_path
from pipelines.tokens.indexed_dataset import DTYPE_CODES, MAGIC


class IndexedWriter:
    """One shard streamed to disk as documents arrive: their tokens go straight to a temporary `.bin`
    and only their lengths (8 bytes a document) stay in memory, so a shard of a billion tokens costs
    its writer megabytes, not gigabytes. `close()` commits it: `.bin` renamed first, `.idx` last, so
    an `.idx` never names a partial `.bin`."""

    def __init__(self, prefix: Path, dtype=np.uint16):
        self.prefix, self.dtype = Path(prefix), np.dtype(dtype)
        self.bin = Path(f"{prefix}.bin")
        self.bin.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.bin)
        self.file = open(self.tmp, "wb")
        self.lengths: list[np.ndarray] = []

    def write(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Documents back to back: `tokens` holds them all, `lengths` one count each."""
        tokens.astype(self.dtype, copy=False).tofile(self.file)
        self.lengths.append(np.asarray(lengths, np.int64))

    def close(self) -> tuple[int, int]:
        """Commit the shard; returns (documents, tokens). A shard without documents is not written
        (Megatron cannot memory-map an empty .bin), and one an earlier attempt left under this
        prefix is removed: the prefix then holds no shard, as the report says."""
        self.file.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        if not len(lengths):
            self.tmp.unlink()
            for path in (Path(f"{self.prefix}.idx"), self.bin):
                path.unlink(missing_ok=True)
            return 0, 0
        pointers = np.zeros(len(lengths), np.int64)
        pointers[1:] = np.cumsum(lengths[:-1]) * self.dtype.itemsize
        with atomic_path(f"{self.prefix}.idx") as idx_tmp:
            with open(idx_tmp, "wb") as f:
                f.write(MAGIC)
                f.write(struct.pack("<Q", 1))
                f.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
                f.write(struct.pack("<Q", len(lengths)))
                f.write(struct.pack("<Q", len(lengths) + 1))
                f.write(lengths.astype(np.int32).tobytes())
                f.write(pointers.tobytes())
                f.write(np.arange(len(lengths) + 1, dtype=np.int64).tobytes())
            os.replace(self.tmp, self.bin)  # before the .idx appears (atomic_path renames it on exit)
        return len(lengths), int(lengths.sum())


def write_indexed(prefix: Path, tokens: np.ndarray, lengths: np.ndarray) -> None:
    """Write one whole shard atomically (documents already in memory: tests, benchmarks)."""
    writer = IndexedWriter(prefix, tokens.dtype)
    writer.write(tokens, lengths)
    writer.close()
