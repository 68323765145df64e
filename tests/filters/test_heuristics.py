"""Zyda-1 heuristics: the feature definitions match Zyda-1's own, and every threshold holds at its boundary."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from filters.heuristics import HeuristicFilters, features, pattern_count
from pipelines.core.config import HeuristicFilterConfig


def test_features_equal_zyda1_filtering_features(data_dir):
    rows = pq.read_table(sorted((data_dir / "sources" / "zyda").rglob("*.parquet"))).to_pylist()
    assert len(rows) == 600
    for row in rows:
        theirs = json.loads(row["filtering_features"])
        ours = features(row["text"])
        assert ours.word_count == theirs["word_count"]
        assert round(ours.mean_word_length, 4) == pytest.approx(theirs["mean_word_length"], abs=1e-4)
        assert round(ours.fraction_non_alphanumeric, 4) == pytest.approx(theirs["fraction_non_alphanumeric"], abs=1e-4)
        assert round(ours.fraction_numerical, 4) == pytest.approx(theirs["fraction_numerical"], abs=1e-4)
        for pattern, n in theirs["pattern_counts"].items():
            assert pattern_count(row["text"], pattern) == n, pattern


def check(text: str, **cfg) -> str | None:
    defaults = dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None)
    return HeuristicFilters(HeuristicFilterConfig(**{**defaults, **cfg})).check(text)


def words(n: int, length: int = 5) -> str:
    return " ".join(["a" * length] * n)


def test_min_chars_boundary():
    assert check("abcd " * 19 + "abcd") == "min_chars"            # 99 characters
    assert check("abcd " * 19 + "abcde") is None                 # 100 characters


def test_mean_word_length_boundaries():
    assert check(words(40, 3)) is None and check(words(40, 12)) is None
    assert check(words(40, 3) + " ab") == "mean_word_length"     # mean just under 3
    assert check(words(40, 12) + " " + "b" * 13) == "mean_word_length"  # mean just over 12


def test_non_alphanumeric_fraction_boundary():
    text = " ".join(["aaaaaa!!!"] * 9 + ["aaaaaaa!!!"])           # 100 characters, 30 of them '!'
    assert len(text) == 100 and check(text) is None               # exactly 30%
    assert check(text.replace("a!", "!!", 1)) == "non_alnum_fraction"  # 31%
    assert check(text.replace(" ", "\n")) is None                 # whitespace never counts


def test_digit_fraction_boundary():
    assert check("abcd " * 16 + "1" * 20) is None                 # 20 digits of 100 characters
    assert check("abcd " * 16 + "1" * 21) == "digit_fraction"


def test_boilerplate_and_repetition():
    text = words(30) + " lorem ipsum dolor"
    assert check(text) == "boilerplate:lorem ipsum"
    assert check(text, boilerplate_max_counts={"lorem ipsum": 1}) is None
    assert check(words(30) + " JavaScript javascript", boilerplate_max_counts={"javascript": 1}) == \
        "boilerplate:javascript"
    lines = "\n".join(["the same line of text here"] * 5 + [f"line number {i} is unique" for i in range(5)])
    assert check(lines, dup_line_frac=0.3) == "repetition:dup_line_frac"
    assert check(lines, dup_line_frac=0.5) is None


def test_first_failing_filter_names_the_reason():
    assert check("x") == "min_chars"                              # also fails others; reported first


def test_repetition_checks_give_datatrove_gopher_verdicts(data_dir):
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherRepetitionFilter

    from filters.heuristics import repetition
    cfg = HeuristicFilterConfig(dup_line_frac=0.1, dup_para_frac=0.1, dup_line_char_frac=0.05,
                                dup_para_char_frac=0.05)  # strict, so that many documents fail
    theirs = GopherRepetitionFilter(dup_line_frac=0.1, dup_para_frac=0.1, dup_line_char_frac=0.05,
                                    dup_para_char_frac=0.05, top_n_grams=(), dup_n_grams=())
    texts = pq.read_table(sorted((data_dir / "sources" / "zyda").rglob("*.parquet"))).column("text").to_pylist()
    failed = 0
    for text in texts[:250]:
        verdict = theirs.filter(Document(text=text, id=""))
        expected = None if verdict is True else verdict[1]
        assert repetition(text, cfg) == expected
        failed += expected is not None
    assert failed > 10
