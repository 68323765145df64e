"""The filter protocol, and the native-score cut (FineWeb-Edu's `int_score`) written in it.

A filter sees a batch of documents (a DOC_SCHEMA table: text and native columns) and answers per
document `None` (keep) or the reason it is removed. It does so in two steps so that measuring and
deciding stay apart: `score(docs)` returns named per-document columns (the heuristics' first
failing rule, a classifier's label and probability, a native score), and `keep(scores)` turns them
into keep-or-reason. A filter whose scores belong in the outputs names them in `output_columns`
(the quality classifier's `quality_pred` / `quality_prob`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa


@runtime_checkable
class DocumentFilter(Protocol):
    output_columns: tuple[str, ...]  # scores written beside the documents (empty: none)

    def score(self, docs: pa.Table) -> dict[str, list]:
        """Per-document scores of a batch, by name; every list has `docs.num_rows` entries."""

    def keep(self, scores: dict[str, list]) -> list[str | None]:
        """None (keep) or the removal reason, per document."""


def judge(flt: DocumentFilter, docs: pa.Table) -> tuple[list[str | None], dict[str, list]]:
    """(reasons, scores) of a batch: the one way every filter stage applies a filter."""
    scores = flt.score(docs)
    return flt.keep(scores), scores


class MinIntScore:
    """FineWeb-Edu's own cut: keep `int_score >= minimum` (the recipe keeps >= 3, RECIPE.md);
    a document without a score is removed as `int_score_missing`."""
    output_columns = ()

    def __init__(self, minimum: int):
        self.minimum = minimum

    def score(self, docs: pa.Table) -> dict[str, list]:
        return {"int_score": docs.column("int_score").to_pylist()}

    def keep(self, scores: dict[str, list]) -> list[str | None]:
        m = self.minimum
        return [None if s is not None and s >= m else ("int_score_missing" if s is None else f"int_score_below_{m}")
                for s in scores["int_score"]]
