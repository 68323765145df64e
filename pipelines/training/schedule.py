"""Learning-rate schedules as pure functions of the optimizer step (0-based).

Pure functions, not stateful scheduler objects: the LR at step s is the same whether the run was
resumed or not, and a test can check the whole shape without training.
"""

from __future__ import annotations

import math


def _decay(start: float, end: float, progress: float, shape: str) -> float:
    progress = min(max(progress, 0.0), 1.0)
    if shape == "cosine":
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
    return start + (end - start) * progress


def pretrain_lr(step: int, steps: int, peak: float, schedule, min_lr_ratio: float) -> float:
    """Linear warmup to `peak`, then cosine to `min_lr_ratio * peak` at the last step, or WSD:
    flat at peak until the last `decay_fraction` of steps, then linear to the minimum."""
    warmup, low = schedule.warmup_steps, peak * min_lr_ratio
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule.kind == "cosine":
        return _decay(peak, low, (step - warmup + 1) / (steps - warmup), "cosine")
    decay_steps = max(1, round(steps * schedule.decay_fraction))
    start = steps - decay_steps
    return peak if step < start else _decay(peak, low, (step - start + 1) / decay_steps, "linear")


def anneal_lr(step: int, peak: float, anneal) -> float:
    """Annealing: re-warm linearly to `rewarm_fraction * peak`, then decay to exactly 0 at the last step."""
    top = peak * anneal.rewarm_fraction
    if step < anneal.rewarm_steps:
        return top * (step + 1) / anneal.rewarm_steps
    return _decay(top, 0.0, (step - anneal.rewarm_steps + 1) / (anneal.steps - anneal.rewarm_steps), anneal.decay)
