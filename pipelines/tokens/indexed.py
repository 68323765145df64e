"""Write one Megatron indexed shard (`<prefix>.bin` + `<prefix>.idx`; the format and the reader are in
`pipelines.tokens.indexed_dataset`)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from pipelines.core.outputs import atomic_path
from pipelines.tokens.indexed_dataset import DTYPE_CODES, MAGIC


def write_indexed(prefix: Path, tokens: np.ndarray, lengths: np.ndarray) -> None:
    """Write one shard atomically: both files go to temporary names, then .bin is renamed and .idx last."""
    prefix = Path(prefix)
    dtype = tokens.dtype
    pointers = np.zeros(len(lengths), np.int64)
    if len(lengths) > 1:
        pointers[1:] = np.cumsum(lengths[:-1]) * dtype.itemsize
    # contexts exit in reverse order: the inner one (.bin) is renamed first, the outer one (.idx) last
    with atomic_path(str(prefix) + ".idx") as idx_tmp, atomic_path(str(prefix) + ".bin") as bin_tmp:
        tokens.tofile(bin_tmp)
        with open(idx_tmp, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<Q", 1))
            f.write(struct.pack("<B", DTYPE_CODES[dtype]))
            f.write(struct.pack("<Q", len(lengths)))
            f.write(struct.pack("<Q", len(lengths) + 1))
            f.write(lengths.astype(np.int32).tobytes())
            f.write(pointers.tobytes())
            f.write(np.arange(len(lengths) + 1, dtype=np.int64).tobytes())
