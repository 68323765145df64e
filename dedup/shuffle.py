"""Shuffles through files: one file per map task and step, so a shuffle of M map tasks into P
partitions costs M + P small Ray objects (stats and arguments), not M x P objects in the object store.

A step is a folder `<root>/<name>/` on storage every node sees (the run folder). Map task i writes
its whole output, already split into the step's P partitions, to ONE file `<i:06d>.shf`; reducer p
then reads partition p's slice of every map file, concatenated in map-index order (so what a reducer
sees does not depend on which map finished first). Ray objects carry only a `Step` (folder, counts)
and small stats. The caller deletes a step (`Step.remove`) once all its reducers are done.

File format (all integers unsigned 64-bit little-endian; header 8 x (P + 4) bytes):

    magic    8 bytes  b"ZY2SHUF1"
    parts    P
    width    W, values per row
    offsets  P + 1 row indices: partition p is rows offsets[p] .. offsets[p+1]; offsets[P] = rows
    rows     rows x W values in C order, partition 0 first; inside a partition, the map's own order

A reader takes a contiguous range of partitions [lo, hi) from every file with three reads
(header, the two offsets, the rows): one open per (map, reducer), no per-file index in memory.

Partitioning: `hash_range(keys, P)` puts a key in partition floor(h(key) x P / 2^32) of a 32-bit
mix h, so for any P' dividing P, partition q of P' is exactly partitions [q k, (q + 1) k) of P
(k = P / P'): a step written with P partitions is read by P' reducers (`Step.read(q*k, (q+1)*k)`).
`hash_mod` is the bucket shuffle's partition (`h % P`), kept because the bucket reducers' per-partition
edge counts are recorded in dedup/summary.json.

Writes go through the one atomic writer (pipelines/core/outputs.py): a file appears complete under
its name or not at all, and a retried map task replaces its file. Errors: `ShuffleError` naming the
file for a missing file (a map task that did not run), a bad magic, a file of another step's
partition count or width, or a file shorter than its header says.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.core.outputs import atomic_path

MAGIC = b"ZY2SHUF1"
_HEAD = struct.Struct("<8sQQ")  # magic, parts, width
_MIX = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3 fmix64 constant: document keys are far from uniform


class ShuffleError(RuntimeError):
    """A shuffle file that cannot be read as its step expects (message names the file)."""


def hash_mod(keys: np.ndarray, parts: int) -> np.ndarray:
    """Partition (uint64, 0..parts-1) of 64-bit keys as `h(key) % parts`: the bucket shuffle's."""
    with np.errstate(over="ignore"):
        return ((keys * _MIX) >> np.uint64(40)) % np.uint64(parts)


def hash_range(keys: np.ndarray, parts: int) -> np.ndarray:
    """Partition (int64, 0..parts-1) of 64-bit keys as floor(h x parts / 2^32), h the top 32 bits of a
    multiplicative mix: the partitions of a divisor of `parts` are contiguous ranges of these."""
    with np.errstate(over="ignore"):
        h = (keys.astype(np.uint64) * _MIX) >> np.uint64(32)
        return ((h * np.uint64(parts)) >> np.uint64(32)).astype(np.int64)


@dataclass(frozen=True)
class Step:
    """One shuffle step: `maps` files in `folder`, each split into `parts` partitions of rows of
    `width` uint64 values. Small and picklable: it is what tasks receive instead of data."""
    folder: str
    maps: int
    parts: int
    width: int = 2

    @property
    def header_bytes(self) -> int:
        return _HEAD.size + 8 * (self.parts + 1)

    def path(self, i: int) -> Path:
        return Path(self.folder) / f"{i:06d}.shf"

    def write(self, i: int, rows: np.ndarray, part: np.ndarray) -> int:
        """Map side: write map task `i`'s `rows` ((n, width) uint64) with `part[j]` (0..parts-1) the
        partition of row j, as one file; rows of a partition keep their order. Returns the rows' bytes
        (the shuffle's payload, header not counted)."""
        rows = np.asarray(rows, dtype="<u8").reshape(-1, self.width)
        part = np.asarray(part, dtype=np.int64)
        if len(part) != len(rows):
            raise ValueError(f"{len(rows)} rows but {len(part)} partition numbers")
        if len(part) and (part.min() < 0 or part.max() >= self.parts):
            raise ValueError(f"partition numbers must be in [0, {self.parts})")
        counts = np.bincount(part, minlength=self.parts)
        offsets = np.zeros(self.parts + 1, "<u8")
        np.cumsum(counts, out=offsets[1:])
        ordered = rows[np.argsort(part, kind="stable")]
        with atomic_path(self.path(i)) as tmp, open(tmp, "wb") as f:
            f.write(_HEAD.pack(MAGIC, self.parts, self.width))
            f.write(offsets.tobytes())
            f.write(ordered.data)
        return int(rows.nbytes)

    def read(self, lo: int, hi: int | None = None) -> np.ndarray:
        """Reduce side: partitions [lo, hi) (default: partition lo alone) of every map file,
        concatenated in map-index order, as an (n, width) uint64 array."""
        hi = lo + 1 if hi is None else hi
        if not 0 <= lo <= hi <= self.parts:
            raise ValueError(f"partitions [{lo}, {hi}) are not within [0, {self.parts})")
        try:  # names relative to the open folder: no path lookup per file (a reducer opens `maps` files)
            folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise ShuffleError(f"shuffle step {self.folder} is missing (its map tasks did not run)") from None
        try:
            pieces = [self._read_one(folder, i, lo, hi) for i in range(self.maps)]
        finally:
            os.close(folder)
        pieces = [p for p in pieces if len(p)]
        if not pieces:
            return np.zeros((0, self.width), np.uint64)
        return (np.concatenate(pieces) if len(pieces) > 1 else pieces[0]).reshape(-1, self.width)

    def _read_one(self, folder: int, i: int, lo: int, hi: int) -> np.ndarray:
        name = f"{i:06d}.shf"
        try:
            fd = os.open(name, os.O_RDONLY, dir_fd=folder)
        except FileNotFoundError:
            raise ShuffleError(f"shuffle file {self.path(i)} is missing (its map task did not finish)") from None
        try:
            head = os.pread(fd, _HEAD.size, 0)
            if head != _HEAD.pack(MAGIC, self.parts, self.width):
                if len(head) < _HEAD.size or head[:8] != MAGIC:
                    raise ShuffleError(f"shuffle file {self.path(i)} is not a shuffle file (bad header)")
                _, parts, width = _HEAD.unpack(head)
                raise ShuffleError(f"shuffle file {self.path(i)} holds {parts} partitions of width {width}, "
                                   f"expected {self.parts} of width {self.width}")
            offsets = _pread(fd, np.empty(hi - lo + 1, "<u8"), _HEAD.size + 8 * lo)
            start, end = int(offsets[0]), int(offsets[-1])
            return _pread(fd, np.empty((end - start) * self.width, "<u8"), self.header_bytes + 8 * self.width * start)
        except EOFError:
            raise ShuffleError(f"shuffle file {self.path(i)} is shorter than its header says (cut short?)") from None
        finally:
            os.close(fd)

    def remove(self) -> None:
        """Delete the step's folder (its reducers are done)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _pread(fd: int, out: np.ndarray, offset: int) -> np.ndarray:
    """Fill `out` with the file's bytes from `offset` (several reads if the kernel returns fewer);
    EOFError if the file ends first."""
    if not out.size:
        return out
    done = os.preadv(fd, [out], offset)
    if done < out.nbytes:
        view = memoryview(out).cast("B")
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n == 0:
                raise EOFError
            done += n
    return out


def clear(root: Path | str) -> None:
    """Delete every step under `root` (left by an interrupted run: the steps are recomputed)."""
    shutil.rmtree(root, ignore_errors=True)
