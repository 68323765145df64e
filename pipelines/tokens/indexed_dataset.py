"""Megatron-LM / GPT-NeoX indexed token datasets: `<prefix>.bin` + `<prefix>.idx`, and their reader.

Format (Megatron `MMapIndexedDataset`, index version 1), little endian:
  .idx  magic b"MMIDIDX\\x00\\x00" | u64 version = 1 | u8 dtype code (8 = uint16, 4 = int32)
        | u64 sequence count S | u64 document count D+1
        | i32[S] sequence lengths | i64[S] byte offsets into .bin | i64[D+1] document index
  .bin  every sequence's tokens back to back
One sequence per document here, so the document index is 0..S. `IndexedDataset` memory-maps both;
`pipelines.tokens.indexed.write_indexed` writes a shard.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
               np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7, np.dtype(np.uint16): 8}


class IndexedDataset:
    """Read-only, memory-mapped view of a `.bin/.idx` pair: `ds[i]` is document i's tokens."""

    def __init__(self, prefix: str | Path):
        prefix = str(prefix)
        with open(prefix + ".idx", "rb") as f:
            if f.read(9) != MAGIC:
                raise ValueError(f"{prefix}.idx is not a Megatron indexed dataset")
            version, = struct.unpack("<Q", f.read(8))
            code, = struct.unpack("<B", f.read(1))
            self.n_sequences, = struct.unpack("<Q", f.read(8))
            self.n_documents, = struct.unpack("<Q", f.read(8))
            offset = f.tell()
        if version != 1:
            raise ValueError(f"{prefix}.idx: index version {version}, expected 1")
        self.dtype = next(d for d, c in DTYPE_CODES.items() if c == code)
        idx = np.memmap(prefix + ".idx", mode="r", order="C")
        s = self.n_sequences
        self.sizes = np.frombuffer(idx, np.int32, s, offset)
        self.pointers = np.frombuffer(idx, np.int64, s, offset + 4 * s)
        self.doc_idx = np.frombuffer(idx, np.int64, self.n_documents, offset + 12 * s)
        self.bin = np.memmap(prefix + ".bin", dtype=self.dtype, mode="r") if s else np.zeros(0, self.dtype)

    def __len__(self) -> int:
        return self.n_sequences

    def __getitem__(self, i: int) -> np.ndarray:
        start = self.pointers[i] // self.dtype.itemsize
        return self.bin[start: start + self.sizes[i]]

    @property
    def n_tokens(self) -> int:
        return int(self.sizes.sum(dtype=np.int64))


class ConcatenatedDatasets:
    """Several shards read as one, in order (a component's validation shards, one per planned shard):
    `ds[i]` is document i of their concatenation; `sizes` and `n_tokens` as IndexedDataset's."""

    def __init__(self, parts: list[IndexedDataset]):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.sizes = np.concatenate([p.sizes for p in parts]) if parts else np.zeros(0, np.int32)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k][i - int(self.starts[k])]

    @property
    def n_tokens(self) -> int:
        return int(self.sizes.sum(dtype=np.int64))
