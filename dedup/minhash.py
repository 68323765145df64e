"""MinHash signatures at Zyda-2's parameters, computed straight from Arrow string buffers.

Shingles. `char`: every window of `ngram` Unicode code points of the raw text (no normalisation,
as the recipe and the ground truth define it); `word`: every window of `ngram` whitespace-separated
words (Python's `str.split()`). A text with fewer than `ngram` units is one shingle. Each shingle is
hashed with a 64-bit polynomial rolling hash finished by MurmurHash3's fmix64.

Permutations. Hash i of shingle hash x (its top 32 bits) is `(a_i * x + b_i) >> 32` in 64-bit
arithmetic, a_i odd and b_i uniform 64-bit from `numpy.random.default_rng(seed)`: Dietzfelbinger's
multiply-add-shift family, strongly universal for 32-bit keys, so each signature slot is a 32-bit
min-wise hash and P(slot equal) = Jaccard. (NeMo Curator/cuDF use MurmurHash3 + (a x + b) mod p,
datasketch the same with a silent 64-bit overflow; the estimator is the same, the values differ.)
`hash_bits: 64` uses fmix64(a_i * x + b_i) over the full 64-bit shingle hash instead.

Why a numba kernel: the UTF-8 decode, rolling hash and 128 multiply-add-shift-min per shingle run
in one pass over the Arrow buffer with no Python object per shingle. Measured on this repo's
machine (benchmarks/minhash.py, README figures): several times rensa (its input is a Python list
of shingle strings) and tens of times datasketch on the same text and parameters.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import pyarrow as pa

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_BASE = np.uint64(0x100000001B3)  # odd: the rolling hash stays a bijection of each prefix state
_EMPTY32 = np.uint32(0xFFFFFFFF)
_BLOCK = 2048


@nb.njit(inline="always")
def _fmix64(h):
    h ^= h >> np.uint64(33)
    h *= _M1
    h ^= h >> np.uint64(33)
    h *= _M2
    h ^= h >> np.uint64(33)
    return h


@nb.njit(inline="always")
def _decode(data, pos):
    """(code point, next position) of the UTF-8 sequence at `pos` (Arrow strings are valid UTF-8)."""
    c0 = np.uint64(data[pos])
    if c0 < 0x80:
        return c0, pos + 1
    if c0 < 0xE0:
        return ((c0 & np.uint64(0x1F)) << np.uint64(6)) | (np.uint64(data[pos + 1]) & np.uint64(0x3F)), pos + 2
    if c0 < 0xF0:
        return (((c0 & np.uint64(0x0F)) << np.uint64(12))
                | ((np.uint64(data[pos + 1]) & np.uint64(0x3F)) << np.uint64(6))
                | (np.uint64(data[pos + 2]) & np.uint64(0x3F))), pos + 3
    return (((c0 & np.uint64(0x07)) << np.uint64(18)) | ((np.uint64(data[pos + 1]) & np.uint64(0x3F)) << np.uint64(12))
            | ((np.uint64(data[pos + 2]) & np.uint64(0x3F)) << np.uint64(6))
            | (np.uint64(data[pos + 3]) & np.uint64(0x3F))), pos + 4


@nb.njit(inline="always")
def _is_space(cp):
    """Python's str.split() whitespace."""
    if cp <= 32:
        return cp == 32 or (9 <= cp <= 13) or (28 <= cp <= 31)
    return (cp == 0x85 or cp == 0xA0 or cp == 0x1680 or (0x2000 <= cp <= 0x200A) or cp == 0x2028
            or cp == 0x2029 or cp == 0x202F or cp == 0x205F or cp == 0x3000)


@nb.njit(nogil=True, cache=True)
def _shingle_hashes(data, start, end, ngram, word_mode, out):
    """Write the 64-bit hash of every shingle of data[start:end] into `out`; return how many."""
    bn = np.uint64(1)
    for _ in range(ngram):
        bn *= _BASE
    ring = np.zeros(ngram, np.uint64)
    h = np.uint64(0)
    k = 0
    n = 0
    pos = start
    wh = np.uint64(0)
    in_word = False
    while pos < end or (word_mode and in_word):
        if pos < end:
            cp, pos = _decode(data, pos)
        else:
            cp = np.uint64(32)  # flush the last word
        if word_mode:
            if not _is_space(cp):
                wh = wh * _BASE + cp + np.uint64(1)
                in_word = True
                continue
            if not in_word:
                continue
            unit = _fmix64(wh) | np.uint64(1)
            wh = np.uint64(0)
            in_word = False
        else:
            unit = cp + np.uint64(1)
        slot = k % ngram
        h = h * _BASE + unit - ring[slot] * bn
        ring[slot] = unit
        k += 1
        if k >= ngram:
            out[n] = _fmix64(h)
            n += 1
    if 0 < k < ngram:
        out[n] = _fmix64(h)
        n += 1
    return n


@nb.njit(inline="always")
def _min_block(xs, nx, a, b, mins):
    """mins[i] = min(mins[i], min_j (a_i * xs[j] + b_i) >> 32). Written exactly like this (own small
    array, loop from 0) LLVM vectorises it: 43 MB/s per core vs 16 MB/s for the same loop over a
    slice of the shingle buffer (measured on the fixtures)."""
    for i in range(a.shape[0]):
        ai = a[i]
        bi = b[i]
        m = mins[i]
        for j in range(nx):
            m = min(m, (ai * xs[j] + bi) >> np.uint64(32))
        mins[i] = m


@nb.njit(nogil=True)
def _doc_shingles(data, offsets, d, ngram, word_mode, buf):
    """(buffer, count) of document d's shingle hashes; the buffer grows as documents need."""
    start, end = offsets[d], offsets[d + 1]
    if buf.shape[0] < end - start + 1:
        buf = np.empty(end - start + 1, np.uint64)
    return buf, _shingle_hashes(data, start, end, ngram, word_mode, buf)


@nb.njit(nogil=True, cache=True)
def _signatures32(data, offsets, ngram, word_mode, a, b, out):
    n_perm = a.shape[0]
    mins = np.empty(n_perm, np.uint64)
    xs = np.empty(_BLOCK, np.uint64)
    buf = np.empty(0, np.uint64)
    for d in range(offsets.shape[0] - 1):
        buf, n = _doc_shingles(data, offsets, d, ngram, word_mode, buf)
        mins[:] = np.uint64(0xFFFFFFFF)
        for lo in range(0, n, _BLOCK):  # blocks stay in L1 while all permutations sweep them
            hi = min(lo + _BLOCK, n)
            for j in range(lo, hi):
                xs[j - lo] = buf[j] >> np.uint64(32)  # the 32-bit key of the multiply-add-shift family
            _min_block(xs, hi - lo, a, b, mins)
        for i in range(n_perm):
            out[d, i] = np.uint32(mins[i])


@nb.njit(nogil=True, cache=True)
def _signatures64(data, offsets, ngram, word_mode, a, b, out):
    buf = np.empty(0, np.uint64)
    for d in range(offsets.shape[0] - 1):
        buf, n = _doc_shingles(data, offsets, d, ngram, word_mode, buf)
        for i in range(a.shape[0]):
            m = np.uint64(0xFFFFFFFFFFFFFFFF)
            for j in range(n):
                m = min(m, _fmix64(a[i] * buf[j] + b[i]))
            out[d, i] = m


def permutations(num_hashes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64 - 1, num_hashes, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, 2**64 - 1, num_hashes, dtype=np.uint64, endpoint=True)
    return a, b


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, int64 offsets) of a string array, without copying the text."""
    if pa.types.is_large_string(arr.type):
        offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset: arr.offset + len(arr) + 1]
    else:
        offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    return data, offsets


def signatures(texts: pa.Array | pa.ChunkedArray | list[str], cfg) -> np.ndarray:
    """(n_docs, num_hashes) MinHash signatures; uint32, or uint64 with hash_bits 64. `cfg`: the
    `dedup` config section (shingle, ngram, num_hashes, hash_bits, seed)."""
    if isinstance(texts, list):
        texts = pa.array(texts, pa.string())
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    a, b = permutations(cfg.num_hashes, cfg.seed)
    dtype = np.uint32 if cfg.hash_bits == 32 else np.uint64
    kernel = _signatures32 if cfg.hash_bits == 32 else _signatures64
    out = np.empty((sum(len(c) for c in chunks), cfg.num_hashes), dtype)
    row = 0
    for chunk in chunks:
        data, offsets = _buffers(chunk)
        kernel(data, offsets, cfg.ngram, cfg.shingle == "word", a, b, out[row: row + len(chunk)])
        row += len(chunk)
    return out


def shingle_set(text: str, cfg) -> np.ndarray:
    """Sorted unique 64-bit shingle hashes of one text (exact Jaccard up to 2^-64 collisions);
    `cfg`: the `dedup` config section."""
    raw = np.frombuffer(text.encode("utf-8"), np.uint8)
    buf = np.empty(len(raw) + 1, np.uint64)
    n = _shingle_hashes(raw, 0, len(raw), cfg.ngram, cfg.shingle == "word", buf)
    return np.unique(buf[:n])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two sorted unique hash sets."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def band_keys(sigs: np.ndarray, bands: int, rows: int, seed: int) -> np.ndarray:
    """(n_docs, bands) 64-bit keys; two docs share a key iff their band's `rows` slots all agree
    (up to 2^-64 collisions). The band index is mixed in so keys of different bands never meet."""
    n = sigs.shape[0]
    keys = np.empty((n, bands), np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            k = np.full(n, np.uint64(seed) * _M2 + np.uint64(band) * _M1, np.uint64)
            for r in range(band * rows, (band + 1) * rows):
                k = _fmix64_np(k ^ sigs[:, r].astype(np.uint64)) + np.uint64(r)
            keys[:, band] = k
    return keys


def _fmix64_np(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * _M1
    h = h ^ (h >> np.uint64(33))
    h = h * _M2
    return h ^ (h >> np.uint64(33))


def candidate_probability(j: float | np.ndarray, bands: int, rows: int):
    """P(two docs with Jaccard j share at least one band) = 1 - (1 - j^rows)^bands."""
    return 1.0 - (1.0 - np.asarray(j, dtype=float) ** rows) ** bands
