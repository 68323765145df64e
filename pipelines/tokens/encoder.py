"""SentencePiece's exact Mistral v0.1 ids, several times faster: cut the text into units no merge can
cross, encode each distinct unit once with SentencePiece, and reuse its ids from a bounded cache.

Why the cut is exact. SentencePiece's BPE (`bpe_model.cc`, `Model::SampleEncode`/`Encode`) starts from
the characters of the normalised text and repeatedly merges the adjacent pair of highest score whose
concatenation is a vocabulary piece (ties: leftmost first). A merge across position i therefore makes
a piece that holds the characters text[i-1] text[i] side by side. We cut only where no piece of the
vocabulary (normal or unused; models with user-defined symbols are refused) holds that pair, so no
merge ever crosses a cut, every unit sees the same merges in the same order as inside the whole
text, and the ids of a text are the ids of its units one after another. The pieces SentencePiece
merges into are read from the model file:

- `W`: the characters of multi-character pieces (258 for Mistral v0.1, "▁" among them). Every other
  character appears in no piece but itself, so a cut on either side of it is safe.
- No piece has "▁" after another character (pieces start with their whitespace: trainer flags
  `treat_whitespace_as_suffix: false`, `split_by_whitespace: true`), so a cut before a space that
  follows a non-space is safe.

  unit = [ ▁]* W+  |  [ ▁]+  |  (not W, not space)+      (" " and "▁" are the same symbol after normalising)

`PreTokenizer` checks every pair of every piece against this rule when it is built, and refuses a
model for which a cut could split a piece, or whose normaliser does more than the Mistral one
(identity character map, dummy prefix, spaces kept; anything else raises ValueError).
`tests/pipelines/test_encoder.py` compares ids with SentencePiece on every fixture and `ext/` document
and on generated strings.

Speed (`benchmarks/tokenize.py`, one core): web text is Zipfian, so most units have been seen before
and cost a scan and a hash look-up in a numba kernel instead of a BPE run (99.5% of units on a 250 MB
corpus: 5.5-7.8x SentencePiece's tokens per CPU second; 3.6-4.0x on the 22 MB fixtures, where the
cache starts cold). kitoken, an exact Rust tokenizer on PyPI, measured 4.4x and 4.8-5.1x there: faster
with a cold cache, slower with a warm one, and exact only as far as tested, while every unit here goes
through SentencePiece itself.
"""

from __future__ import annotations

import functools
import re

import numba as nb
import numpy as np

from pipelines.tokens.tokenizer import BOS, EOS, _processor, model_path

SPACES = " \u2581"  # a space, and SentencePiece's own whitespace mark "▁" (U+2581), which is what " " becomes
_NORMAL, _USER_DEFINED, _UNUSED = 1, 4, 5  # ModelProto.SentencePiece.Type
CHARS_PER_UNIT = 64  # the cache is also emptied when its units hold more than this many characters each on average
CHUNK_CHARS = 1 << 20  # documents are scanned in chunks of about this many characters (temporaries: 36 bytes each)


class PreTokenizer:
    """The unit regex of a SentencePiece BPE model, derived from its vocabulary and checked against it.

    Raises ValueError for a model this rule does not cover (not BPE, a normaliser that rewrites text,
    user-defined symbols, or a piece a cut could split).
    """

    def __init__(self, proto):
        spec, norm = proto.trainer_spec, proto.normalizer_spec
        if spec.model_type != spec.BPE:
            raise ValueError("PreTokenizer covers BPE models only")
        if norm.precompiled_charsmap or norm.remove_extra_whitespaces or not norm.escape_whitespaces \
                or spec.treat_whitespace_as_suffix:
            raise ValueError("PreTokenizer needs the identity normaliser that keeps every space (Mistral v0.1)")
        if any(p.type == _USER_DEFINED for p in proto.pieces):
            raise ValueError("PreTokenizer does not cover user-defined symbols (matched before BPE)")
        self.add_dummy_prefix = norm.add_dummy_prefix
        merged = [p.piece for p in proto.pieces if p.type in (_NORMAL, _UNUSED) and len(p.piece) > 1]
        self.word_chars = "".join(sorted(set("".join(merged)) - set(SPACES)))
        w = "".join(re.escape(c) for c in self.word_chars)
        space = re.escape(SPACES)
        self.regex = re.compile(f"[{space}]*[{w}]+|[{space}]+|[^{w}{space}]+")
        for piece in merged:  # every adjacent pair of every piece must stay inside one unit
            for a, b in zip(piece, piece[1:]):
                if self.cuts_between(a, b):
                    raise ValueError(f"piece {piece!r} spans a cut between {a!r} and {b!r}")

    def cuts_between(self, a: str, b: str) -> bool:
        """Whether the regex may end a unit between the characters a and b."""
        kind = [("s" if c in SPACES else "w" if c in self.word_chars else "i") for c in (a, b)]
        return tuple(kind) not in {("s", "s"), ("s", "w"), ("w", "w"), ("i", "i")}

    def units(self, text: str) -> list[str]:
        """The units of `text` in order; their concatenation is the text with the dummy prefix space."""
        if not text:
            return []
        return self.regex.findall(" " + text if self.add_dummy_prefix else text)


class CachedEncoder:
    """Mistral v0.1 ids equal to `SentencePieceProcessor.encode`, with a cache of at most
    `cache_units` distinct units holding at most 64 * `cache_units` characters (emptied when either is
    exceeded; one chunk of documents, ~1 M characters, may pass the bound while it is encoded).

    The scan (units, hash-table look-up) and the gather of ids are numba kernels over the UTF-32 code
    points of the documents; only units not in the cache reach Python and SentencePiece.
    Counters `hits` and `misses` (units) say how often SentencePiece itself had to run.
    """

    def __init__(self, cache_units: int = 1_000_000):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb
        if cache_units < 1:
            raise ValueError(f"cache_units must be >= 1, got {cache_units}")
        _processor()  # checks the model file's md5
        proto = pb.ModelProto()
        proto.ParseFromString(model_path().read_bytes())
        self.pre = PreTokenizer(proto)
        proto.normalizer_spec.add_dummy_prefix = False  # units already carry their leading "▁"
        self._units_sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self._cls = np.full(0x110000, ISOLATED, np.uint8)  # class of every code point
        self._cls[[ord(c) for c in self.pre.word_chars]] = WORD
        self._cls[[ord(c) for c in SPACES]] = SPACE
        self.cache_units = cache_units
        self.hits = self.misses = 0
        self._clear()

    def _clear(self) -> None:
        self._slot_hash = np.zeros(1 << 12, np.uint64)  # open addressing, load <= 1/2; 0 = empty
        self._slot_row = np.zeros(1 << 12, np.int64)
        self._key_start = np.zeros(1 << 11, np.int64)   # row -> its code points in _keys
        self._key_len = np.zeros(1 << 11, np.int64)
        self._id_start = np.zeros(1 << 11, np.int64)    # row -> its ids in _ids
        self._id_len = np.zeros(1 << 11, np.int64)
        self._keys = np.zeros(1 << 14, np.uint32)
        self._ids = np.zeros(1 << 14, np.int32)
        self._rows = self._n_keys = self._n_ids = 0

    def _add(self, units: list[str]) -> None:
        """Encode `units` (not cached yet, distinct) with SentencePiece and add them to the cache."""
        encoded = self._units_sp.encode(units, num_threads=1)
        keys = np.frombuffer("".join(units).encode("utf-32-le"), np.uint32)
        key_len = np.fromiter(map(len, units), np.int64, len(units))
        id_len = np.fromiter(map(len, encoded), np.int64, len(units))
        ids = np.fromiter((i for x in encoded for i in x), np.int32, int(id_len.sum()))
        r0, r1 = self._rows, self._rows + len(units)
        self._key_start, self._key_len, self._id_start, self._id_len = (
            _grown(a, r1) for a in (self._key_start, self._key_len, self._id_start, self._id_len))
        self._keys = _grown(self._keys, self._n_keys + len(keys))
        self._ids = _grown(self._ids, self._n_ids + len(ids))
        self._key_start[r0:r1] = self._n_keys + np.cumsum(key_len) - key_len
        self._key_len[r0:r1] = key_len
        self._id_start[r0:r1] = self._n_ids + np.cumsum(id_len) - id_len
        self._id_len[r0:r1] = id_len
        self._keys[self._n_keys:self._n_keys + len(keys)] = keys
        self._ids[self._n_ids:self._n_ids + len(ids)] = ids
        self._rows, self._n_keys, self._n_ids = r1, self._n_keys + len(keys), self._n_ids + len(ids)
        if 2 * r1 > len(self._slot_hash):  # rehash everything into a table twice as large
            size = len(self._slot_hash) * 2
            while 2 * r1 > size:
                size *= 2
            self._slot_hash, self._slot_row = np.zeros(size, np.uint64), np.zeros(size, np.int64)
            r0 = 0
        _insert(self._slot_hash, self._slot_row, self._key_start, self._key_len, self._keys, r0, r1)

    def _scan(self, cps, doc_ends):
        n = len(cps)  # at most one unit per code point
        rows, start, end = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        hashes, doc_units = np.empty(n, np.uint64), np.empty(len(doc_ends), np.int64)
        k = _scan(cps, doc_ends, self._cls, self._slot_hash, self._slot_row, self._key_start, self._key_len,
                  self._keys, rows, start, end, hashes, doc_units)
        return rows[:k], start[:k], end[:k], hashes[:k], doc_units

    def encode_flat(self, texts: list[str], add_bos: bool = False,
                    append_eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All ids of `texts` end to end, and offsets: document k is ids[offsets[k]:offsets[k + 1]].

        ids: int32, shape (total,); offsets: int64, shape (len(texts) + 1,). BOS (1) before and EOS (2)
        after every document when asked. Raises UnicodeEncodeError for a str with lone surrogates
        (SentencePiece refuses those too).
        """
        parts, lengths = [], []
        start = 0
        while start < len(texts) or not parts:
            stop, size = start, 0
            while stop < len(texts) and (size < CHUNK_CHARS or stop == start):
                size += len(texts[stop]) + 1
                stop += 1
            ids, doc_lens = self._encode_chunk(texts[start:stop], add_bos, append_eos)
            parts.append(ids)
            lengths.append(doc_lens)
            start = stop
        lens = np.concatenate(lengths)
        return np.concatenate(parts), np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)

    def _encode_chunk(self, texts: list[str], add_bos: bool, append_eos: bool) -> tuple[np.ndarray, np.ndarray]:
        prefix = " " if self.pre.add_dummy_prefix else ""
        joined = "".join(prefix + t for t in texts if t)
        cps = np.frombuffer(joined.encode("utf-32-le"), np.uint32)  # code point k = joined[k]
        doc_ends = np.cumsum([len(t) + len(prefix) if t else 0 for t in texts], dtype=np.int64)
        rows, start, end, hashes, doc_units = self._scan(cps, doc_ends)
        missing = np.flatnonzero(rows < 0)
        misses, cleared = 0, False
        while len(missing):  # more than once only after a 64-bit hash collision
            _, first = np.unique(hashes[missing], return_index=True)
            new = missing[np.sort(first)]
            chars = int((end[new] - start[new]).sum())
            if not cleared and (self._rows + len(new) > self.cache_units
                                or self._n_keys + chars > CHARS_PER_UNIT * self.cache_units):
                self._clear()  # every unit of the chunk is needed again
                cleared, misses = True, 0
                _, first = np.unique(hashes, return_index=True)
                new = np.sort(first)
            self._add([joined[a:b] for a, b in zip(start[new].tolist(), end[new].tolist())])
            misses += len(new)
            rows, start, end, hashes, doc_units = self._scan(cps, doc_ends)
            missing = np.flatnonzero(rows < 0)
        self.misses += misses
        self.hits += len(rows) - misses
        return _gather(rows, doc_units, self._id_start, self._id_len, self._ids, add_bos, append_eos, BOS, EOS)

    def encode(self, texts: list[str], add_bos: bool = False, append_eos: bool = True) -> list[list[int]]:
        """Token ids of each text as lists (what `pipelines.tokens.tokenizer.encode` returns)."""
        ids, offsets = self.encode_flat(texts, add_bos, append_eos)
        flat = ids.tolist()
        return [flat[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def _grown(a: np.ndarray, n: int) -> np.ndarray:
    """`a`, or a copy at least twice as long when it holds fewer than n elements."""
    if n <= len(a):
        return a
    size = len(a) * 2
    while size < n:
        size *= 2
    b = np.zeros(size, a.dtype)
    b[:len(a)] = a
    return b


# ---- compiled kernels (numba, cached on disk): the unit scan with its look-up, insertion, the gather
SPACE, WORD, ISOLATED = 2, 1, 0  # character classes of the cut rule
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)  # FNV-1a, 64 bit


@nb.njit(inline="always")
def _hash(cps, i, j):
    h = _FNV_OFFSET
    for k in range(i, j):
        h = (h ^ np.uint64(cps[k])) * _FNV_PRIME
    return h | np.uint64(1)  # 0 marks an empty slot


@nb.njit(nogil=True, cache=True)
def _scan(cps, doc_ends, cls, slot_hash, slot_row, key_start, key_len, keys, rows, unit_start, unit_end, hashes,
          doc_units):
    """Cut each document of `cps` (code points, documents end to end up to doc_ends[d]) into units by
    the rule of `PreTokenizer` ([ ▁]*W+ | [ ▁]+ | isolated+) and look each up: rows[k] = its row or -1,
    hashes[k] its hash. doc_units[d] = units of document d. Returns the number of units."""
    mask = np.uint64(len(slot_hash) - 1)
    n = 0
    i = 0
    for d in range(len(doc_ends)):
        e = doc_ends[d]
        first = n
        while i < e:
            c = cls[cps[i]]
            j = i + 1
            if c == SPACE:
                while j < e and cls[cps[j]] == SPACE:
                    j += 1
                while j < e and cls[cps[j]] == WORD:
                    j += 1
            else:
                while j < e and cls[cps[j]] == c:
                    j += 1
            h = _hash(cps, i, j)
            slot = h & mask
            row = -1
            while slot_hash[slot] != 0:
                if slot_hash[slot] == h:
                    r = slot_row[slot]
                    if key_len[r] == j - i:
                        base = key_start[r]
                        k = 0
                        while k < j - i and keys[base + k] == cps[i + k]:
                            k += 1
                        if k == j - i:
                            row = r
                            break
                slot = (slot + np.uint64(1)) & mask
            rows[n] = row
            hashes[n] = h
            unit_start[n] = i
            unit_end[n] = j
            n += 1
            i = j
        doc_units[d] = n - first
    return n


@nb.njit(nogil=True, cache=True)
def _insert(slot_hash, slot_row, key_start, key_len, keys, r0, r1):
    """Put rows r0..r1-1 (distinct keys, not in the table) into the open-addressing table."""
    mask = np.uint64(len(slot_hash) - 1)
    for r in range(r0, r1):
        h = _hash(keys, key_start[r], key_start[r] + key_len[r])
        slot = h & mask
        while slot_hash[slot] != 0:
            slot = (slot + np.uint64(1)) & mask
        slot_hash[slot] = h
        slot_row[slot] = r


@nb.njit(nogil=True, cache=True)
def _gather(rows, doc_units, id_start, id_len, ids, add_bos, append_eos, bos, eos):
    """The ids of every document (rows' ids, with BOS/EOS) end to end, and each document's id count."""
    extra = int(add_bos) + int(append_eos)
    doc_lens = np.empty(len(doc_units), np.int64)
    total = 0
    u = 0
    for d in range(len(doc_units)):
        n = extra
        for k in range(u, u + doc_units[d]):
            n += id_len[rows[k]]
        u += doc_units[d]
        doc_lens[d] = n
        total += n
    out = np.empty(total, np.int32)
    p = 0
    u = 0
    for d in range(len(doc_units)):
        if add_bos:
            out[p] = bos
            p += 1
        for k in range(u, u + doc_units[d]):
            r = rows[k]
            s = id_start[r]
            for q in range(id_len[r]):
                out[p] = ids[s + q]
                p += 1
        u += doc_units[d]
        if append_eos:
            out[p] = eos
            p += 1
    return out, doc_lens


@functools.cache
def cached_encoder(cache_units: int = 1_000_000) -> CachedEncoder:
    """One encoder per process and cache size, so a Ray worker keeps its cache across partitions."""
    return CachedEncoder(cache_units)
