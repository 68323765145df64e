"""Document filters: cheap heuristics (Zyda-1) and model-based quality classifiers.

Every filter follows one contract: `score(text)` measures, `keep(score)` decides and names the
reason. Scores can be stored and thresholds tuned offline without re-measuring."""
