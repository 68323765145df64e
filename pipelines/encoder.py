"""SentencePiece's exact Mistral v0.1 ids, several times faster: cut the text into units no merge can
cross, encode each distinct unit once with SentencePiece, and reuse its ids from a bounded cache.

Why the cut is exact. SentencePiece's BPE (`bpe_model.cc`, `Model::SampleEncode`/`Encode`) starts from
the characters of the normalised text and repeatedly merges the adjacent pair of highest score whose
concatenation is a vocabulary piece (ties: leftmost first). A merge across position i therefore makes
a piece that holds the characters text[i-1] text[i] side by side. We cut only where no piece of the
vocabulary (normal, user-defined or unused) holds that pair, so no merge ever crosses a cut, every
unit sees the same merges in the same order as inside the whole text, and the ids of a text are the
ids of its units one after another. The pieces SentencePiece merges into are read from the model file:

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
and cost a regex match and a dict look-up instead of a BPE run; the ids of a batch are gathered with
one vectorised numpy index.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from pipelines.tokenizer import BOS, EOS, _processor, model_path

SPACES = " \u2581"  # a space, and SentencePiece's own whitespace mark "▁" (U+2581), which is what " " becomes
_NORMAL, _USER_DEFINED, _UNUSED, _BYTE = 1, 4, 5, 6  # ModelProto.SentencePiece.Type
BOS_ROW, EOS_ROW = 0, 1  # fixed rows of the id table, never evicted
CHARS_PER_UNIT = 64  # the cache is also emptied when its units hold more than this many characters each on average


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
    exceeded; one document's units may pass the bound until the next document).

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
        self.cache_units = cache_units
        self.hits = self.misses = 0
        self._clear()

    def _clear(self) -> None:
        self._index: dict[str, int] = {}
        self._chars = 0  # characters of the cached units: a few very long units must not grow it unbounded
        self._start = np.zeros(1024, np.int64)   # row -> first id in _ids
        self._len = np.zeros(1024, np.int64)     # row -> number of ids
        self._ids = np.zeros(1 << 16, np.int32)
        self._rows = 0
        self._n_ids = 0
        self._add([[BOS], [EOS]])

    def _add(self, encoded: list[list[int]]) -> None:
        """Append rows for the units whose ids are `encoded` (growing the tables by doubling)."""
        lens = np.fromiter(map(len, encoded), np.int64, len(encoded))
        total = int(lens.sum())
        while self._rows + len(encoded) > len(self._start):
            self._start = np.resize(self._start, 2 * len(self._start))
            self._len = np.resize(self._len, 2 * len(self._len))
        while self._n_ids + total > len(self._ids):
            self._ids = np.resize(self._ids, 2 * len(self._ids))
        rows = slice(self._rows, self._rows + len(encoded))
        self._start[rows] = self._n_ids + np.cumsum(lens) - lens
        self._len[rows] = lens
        self._ids[self._n_ids:self._n_ids + total] = np.fromiter(
            (i for ids in encoded for i in ids), np.int32, total)
        self._rows += len(encoded)
        self._n_ids += total

    def _learn(self, units: list[str]) -> None:
        """Encode the units not in the cache with SentencePiece and add them."""
        new = list(dict.fromkeys(u for u in units if u not in self._index))
        self.misses += len(new)
        self.hits += len(units) - len(new)
        self._chars += sum(map(len, new))
        for k, u in enumerate(new, start=self._rows):
            self._index[u] = k
        self._add(self._units_sp.encode(new, num_threads=1))

    def encode_flat(self, texts: list[str], add_bos: bool = False,
                    append_eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All ids of `texts` end to end, and offsets: document k is ids[offsets[k]:offsets[k + 1]].

        ids: int32, shape (total,); offsets: int64, shape (len(texts) + 1,). BOS (1) before and EOS (2)
        after every document when asked. Raises what SentencePiece raises (a str with lone surrogates).
        """
        pieces, doc_units = [], []
        pending: list[int] = []  # rows of the documents since the last gather
        get, units_of = self._index.__getitem__, self.pre.units
        head, tail = [BOS_ROW] if add_bos else [], [EOS_ROW] if append_eos else []
        for text in texts:
            units = units_of(text)
            try:
                rows = list(map(get, units))
                self.hits += len(units)
            except KeyError:
                if self._rows + len(units) > self.cache_units + 2 or self._chars > CHARS_PER_UNIT * self.cache_units:
                    pieces.append(self._gather(pending))  # the rows pending point into the old table
                    pending = []
                    self._clear()
                    get = self._index.__getitem__
                self._learn(units)
                rows = list(map(get, units))
            pending += head
            pending += rows
            pending += tail
            doc_units.append(len(rows) + len(head) + len(tail))
        pieces.append(self._gather(pending))
        ids = np.concatenate([p[0] for p in pieces])
        unit_lens = np.concatenate([p[1] for p in pieces])
        ends = np.concatenate([[0], np.cumsum(unit_lens)])
        offsets = ends[np.concatenate([[0], np.cumsum(doc_units, dtype=np.int64)])]
        return ids, offsets

    def _gather(self, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The ids of `rows` one after another, and each row's id count."""
        r = np.array(rows, np.int64)
        lens = self._len[r]
        total = int(lens.sum())
        first = np.cumsum(lens) - lens  # where each row's ids go in the output
        return self._ids[np.repeat(self._start[r] - first, lens) + np.arange(total)], lens

    def encode(self, texts: list[str], add_bos: bool = False, append_eos: bool = True) -> list[list[int]]:
        """Token ids of each text as lists (what `pipelines.tokenizer.encode` returns)."""
        ids, offsets = self.encode_flat(texts, add_bos, append_eos)
        flat = ids.tolist()
        return [flat[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


@functools.cache
def cached_encoder(cache_units: int = 1_000_000) -> CachedEncoder:
    """One encoder per process and cache size, so a Ray worker keeps its cache across partitions."""
    return CachedEncoder(cache_units)
