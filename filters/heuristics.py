"""Zyda-1's cheap document filters, with the feature definitions of Zyda-1's `filtering_features`.

The definitions are checked against the `filtering_features` column that ships with the Zyda-1
fixtures (tests/filters/test_heuristics.py): words are `text.split()`; the non-alphanumeric
fraction counts characters that are neither alphanumeric nor whitespace, over all characters;
the numerical fraction counts `str.isdigit` characters over all characters; pattern counts are
`text.count`, case-insensitive for "javascript". Repeated lines and paragraphs are the line and
paragraph checks of Gopher as datatrove's `GopherRepetitionFilter` implements them (Zyda-1 applied
no n-gram checks); we re-implement those four checks because datatrove's filter always runs its
spaCy word split, even with the n-gram checks off: 67 docs/s against thousands here, with the same
verdicts on every fixture document (tests/filters/test_heuristics.py).

Character classes are looked up in tables indexed by code point (built once per process), so a
document costs a few NumPy passes instead of a Python loop per character.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass

import numpy as np


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


_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


def _duplicates(parts: list[str]) -> tuple[int, int]:
    """(duplicate elements, their characters): every repeat after an element's first occurrence."""
    seen: set[str] = set()
    elements = chars = 0
    for part in parts:
        if part in seen:
            elements += 1
            chars += len(part)
        else:
            seen.add(part)
    return elements, chars


def repetition(text: str, cfg) -> str | None:
    """Gopher's repeated-paragraph and repeated-line checks, in datatrove's order and wording.
    `cfg`: the `heuristic_filter` config section (its dup_* fractions)."""
    paragraphs = _PARAGRAPHS.split(text.strip())
    dup, chars = _duplicates(paragraphs)
    if cfg.dup_para_frac and dup / len(paragraphs) > cfg.dup_para_frac:
        return "dup_para_frac"
    if cfg.dup_para_char_frac and chars / len(text) > cfg.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = _LINES.split(text)
    dup, chars = _duplicates(lines)
    if cfg.dup_line_frac and dup / len(lines) > cfg.dup_line_frac:
        return "dup_line_frac"
    if cfg.dup_line_char_frac and chars / len(text) > cfg.dup_line_char_frac:
        return "dup_line_char_frac"
    return None


class HeuristicFilters:
    """All of Zyda-1's heuristics in order; `check(text)` returns None (keep) or the first failing
    filter's name, which becomes the removal reason. A `filters.base.DocumentFilter`: its score is
    that first failing rule."""
    output_columns = ()

    def __init__(self, cfg):
        self.cfg = cfg

    def score(self, docs) -> dict[str, list]:
        return {"first_failing": [self.check(t) for t in docs.column("text").to_pylist()]}

    def keep(self, scores: dict[str, list]) -> list[str | None]:
        return scores["first_failing"]

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
        reason = repetition(text, c)
        return f"repetition:{reason}" if reason else None
