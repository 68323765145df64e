"""Document filters: cheap heuristics (Zyda-1), model-based quality classifiers, native-score cuts.

Every filter follows one contract (`filters.base.DocumentFilter`): `score(docs)` measures a batch of
documents, `keep(scores)` decides and names the reason. Scores can be stored and thresholds tuned
offline without re-measuring."""
