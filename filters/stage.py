"""The two filtering stages and the per-source policy that decides what each source goes through.

heuristic_filter  Zyda-1's heuristics on the sources in `heuristic_filter.apply_to`.
quality_filter    the quality classifier on `quality_filter.apply_to` (Zyda-1 and Dolma-CC in the
                  recipe), on Ray actors that load the model once (`setup`); FineWeb-Edu cut to
                  `int_score >= fwe_min_int_score`; every other source untouched.

Both are `FilterStage`s: per partition, one `DocumentFilter` (filters/base.py) judges the documents.
A source a stage does not touch is not copied: the next stage reads it where it already is. Every
removal carries a reason; `report.json` gets, per source and reason, documents and characters
removed and the first few removed documents as examples.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.base import DocumentFilter, MinIntScore, judge
from filters.heuristics import HeuristicFilters
from pipelines.core.counts import Counts
from pipelines.core.schema import read_documents, with_quality_columns
from pipelines.core.stage import Partition, PartitionStage, StageOutput

EXCERPT_CHARS = 300


def filtered(part: Partition, table: pa.Table, reasons: list[str | None], examples: int) -> StageOutput:
    """The kept rows of `table`, with counts, characters and the first `examples` removed per reason."""
    keep = np.array([r is None for r in reasons], bool)
    lengths = pc.utf8_length(table.column("text")).to_numpy(zero_copy_only=False)
    removed: dict[str, int] = {}
    removed_chars: dict[str, int] = {}
    shown: dict[str, list] = {}
    ids = table.column("nemo_id")
    texts = table.column("text")
    for i in np.flatnonzero(~keep):
        reason = reasons[i]
        removed[reason] = removed.get(reason, 0) + 1
        removed_chars[reason] = removed_chars.get(reason, 0) + int(lengths[i])
        if len(shown.setdefault(reason, [])) < examples:
            shown[reason].append({"nemo_id": ids[i].as_py(), "excerpt": texts[i].as_py()[:EXCERPT_CHARS]})
    counts = part.counts(read=table.num_rows, out=int(keep.sum()), removed=removed,
                         chars_out=int(lengths[keep].sum()))
    (counts.figures if removed_chars else counts.notes)["removed_chars"] = dict(sorted(removed_chars.items()))
    counts.notes["examples"] = shown
    return StageOutput(table.filter(pa.array(keep)), counts)


class FilterStage(PartitionStage):
    """A stage that removes documents: `filter_for(cfg, source)` judges each partition's documents."""
    def examples_for(self, cfg) -> int:
        """Removed documents shown per source and reason in report.json."""
        return 5

    def filter_for(self, cfg, source: str) -> DocumentFilter:
        raise NotImplementedError

    def process(self, part: Partition, cfg) -> StageOutput:
        table = read_documents(part.docs)
        flt = self.filter_for(cfg, part.source)
        reasons, scores = judge(flt, table)
        return filtered(part, self.with_scores(table, flt, scores), reasons, self.examples_for(cfg))

    def with_scores(self, table: pa.Table, flt: DocumentFilter, scores: dict) -> pa.Table:
        return table

    def summarize(self, ex, counts: list[Counts], by_source, upstream) -> dict:
        shown: dict[str, dict[str, list]] = {}
        examples = self.examples_for(ex.cfg)
        for c in counts:
            for reason, docs in c.notes.get("examples", {}).items():
                bucket = shown.setdefault(c.source, {}).setdefault(reason, [])
                bucket.extend(docs[: examples - len(bucket)])
        return {"examples": {s: dict(sorted(r.items())) for s, r in sorted(shown.items())}}


class HeuristicFilterStage(FilterStage):
    name = "heuristic_filter"

    def applies_to(self, cfg, source: str) -> bool:
        return source in cfg.heuristic_filter.apply_to

    def examples_for(self, cfg) -> int:
        return cfg.heuristic_filter.examples_per_filter

    def filter_for(self, cfg, source: str) -> DocumentFilter:
        return HeuristicFilters(cfg.heuristic_filter)


class QualityFilterStage(FilterStage):
    name = "quality_filter"
    _model = None  # the classifier, once `setup` has loaded it on this worker

    def applies_to(self, cfg, source: str) -> bool:
        q = cfg.quality_filter
        return source in q.apply_to or (source == "fwe" and q.fwe_min_int_score is not None)

    def uses_setup(self, cfg, source: str) -> bool:
        return source in cfg.quality_filter.apply_to  # FineWeb-Edu's int_score cut needs no model

    def actor_pool(self, cfg) -> tuple[int, float]:
        return cfg.quality_filter.actors, cfg.quality_filter.actor_gpus

    def check(self, cfg) -> None:
        if cfg.quality_filter.backend == "deberta" and cfg.quality_filter.apply_to:
            from filters.quality import resolve_model_dir
            resolve_model_dir(cfg.quality_filter.model)  # fail here, in one line, not inside every actor

    def setup(self, cfg) -> None:
        from filters.quality import load_classifier
        self._model = load_classifier(cfg.quality_filter)

    def filter_for(self, cfg, source: str) -> DocumentFilter:
        q = cfg.quality_filter
        if source in q.apply_to:
            from filters.quality import QualityFilter
            return QualityFilter(self._model, q.keep_labels)
        return MinIntScore(q.fwe_min_int_score)

    def with_scores(self, table: pa.Table, flt: DocumentFilter, scores: dict) -> pa.Table:
        # every partition leaves this stage in QUALITY_SCHEMA (null scores where no classifier ran)
        return with_quality_columns(table, *(scores.get(c) for c in ("quality_pred", "quality_prob")))
