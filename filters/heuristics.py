"""Zyda-1's cheap document filters, with the feature definitions of Zyda-1's `filtering_features`.

The definitions are checked against the `filtering_features` column that ships with the Zyda-1
fixtures (tests/filters/test_heuristics.py): words are `text.split()`; the non-alphanumeric
fraction counts characters that are neither alphanumeric nor whitespace, over all characters;
the numerical fraction counts `str.isdigit` characters over all characters; pattern counts are
`text.count`, case-insensitive for "javascript". Repeated lines and paragraphs use datatrove's
`GopherRepetitionFilter` restricted to its line/paragraph checks (Zyda-1 applied no n-gram checks).

Character classes are looked up in tables indexed by code point (built once per process), so a
document costs a few NumPy passes instead of a Python loop per character.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import numpy as np

from pipelines.config import HeuristicFilterConfig


@functools.cache
def _class_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chars = [chr(c) for c in range(sys.maxunicode + 1)]
    alnum = np.fromiter((c.isalnum() for c in chars), bool, len(chars))
    space = np.fromiter((c.isspace() for c in chars), bool, len(chars))
    digit = np.fromiter((c.isdigit() for c in chars), bool, len(chars))
    return alnum, space, digit


@dataclass
class Features:
    chars: int
    word_count: int
    mean_word_length: float
    fraction_non_alphanumeric: float
    fraction_numerical: float


def features(text: str) -> Features:
    n = len(text)
    words = text.split()
    mean_len = sum(map(len, words)) / len(words) if words else 0.0
    if not n:
        return Features(0, 0, 0.0, 0.0, 0.0)
    alnum, space, digit = _class_tables()
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    non_alnum = int(n - alnum[cps].sum() - space[cps].sum())
    return Features(n, len(words), mean_len, non_alnum / n, int(digit[cps].sum()) / n)


def pattern_count(text: str, pattern: str) -> int:
    return text.lower().count(pattern) if pattern == "javascript" else text.count(pattern)


class HeuristicFilters:
    """All of Zyda-1's heuristics in order; `check(text)` returns None (keep) or the first failing
    filter's name, which becomes the removal reason."""

    def __init__(self, cfg: HeuristicFilterConfig):
        self.cfg = cfg
        self.repetition = None
        rep = {k: getattr(cfg, k) for k in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac",
                                            "dup_para_char_frac")}
        if any(v is not None for v in rep.values()):
            from datatrove.pipeline.filters import GopherRepetitionFilter
            self.repetition = GopherRepetitionFilter(**rep, top_n_grams=(), dup_n_grams=())

    def check(self, text: str) -> str | None:
        c = self.cfg
        f = features(text)
        if f.chars < c.min_chars:
            return "min_chars"
        if not c.min_mean_word_length <= f.mean_word_length <= c.max_mean_word_length:
            return "mean_word_length"
        if f.fraction_non_alphanumeric > c.max_non_alnum_fraction:
            return "non_alnum_fraction"
        if f.fraction_numerical > c.max_digit_fraction:
            return "digit_fraction"
        for pattern, limit in c.boilerplate_max_counts.items():
            if pattern_count(text, pattern) > limit:
                return f"boilerplate:{pattern}"
        if self.repetition is not None:
            from datatrove.data import Document
            verdict = self.repetition.filter(Document(text=text, id=""))
            if verdict is not True:
                return f"repetition:{verdict[1] if isinstance(verdict, tuple) else 'repeated'}"
        return None
