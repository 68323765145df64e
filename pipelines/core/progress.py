"""Live progress of a stage: workers add counts to a tiny Ray actor, the driver draws them.

The actor asks for no CPU (it only adds integers), so it never competes with stage tasks for
the few cores of a small machine. On a terminal the line redraws in place; in CI (`quiet`) or when
stderr is not a terminal it prints at most one line every `LOG_EVERY_S` seconds.

A line reads `[k/N stage] done/total partitions | docs | docs/s | MB/s | elapsed | ETA`. Documents
are those the stage received (its `in` in report.json): the partitions already finished (in an
earlier attempt too) count with their recorded figure, the running ones with what their workers
have reported so far, so the closing line equals the report. The ETA is the elapsed time scaled by
the share of input bytes still to do (partitions weighted by the size of their input file).
"""

from __future__ import annotations

import sys
import time

import ray

LOG_EVERY_S = 10.0


@ray.remote(num_cpus=0)
class ProgressCounter:
    def __init__(self):
        self.counts: dict[str, list[int]] = {}

    def add(self, stage: str, docs: int, nbytes: int) -> None:
        c = self.counts.setdefault(stage, [0, 0])
        c[0] += docs
        c[1] += nbytes

    def get(self, stage: str) -> tuple[int, int]:
        return tuple(self.counts.get(stage, (0, 0)))


def format_seconds(s: float) -> str:
    """`42s`, `3m05s`, `2h07m`: short enough for a progress line."""
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressDisplay:
    """One stage's progress line. `counter` is the ProgressCounter handle (None: no live counts);
    `key` the name the workers report under (default the stage name); `label` e.g. `3/6 dedup`."""

    def __init__(self, stage: str, total_tasks: int, counter, quiet: bool = False, label: str | None = None,
                 key: str | None = None, weights: list[float] | None = None):
        self.stage, self.total, self.counter, self.quiet = stage, total_tasks, counter, quiet
        self.label, self.key = label or stage, key or stage
        self.tty = sys.stderr.isatty() and not quiet
        self.start = self.last_log = time.monotonic()
        self.done = 0
        self.done_docs = 0      # documents of partitions finished in an earlier attempt
        self.weights = weights  # per partition, for the ETA
        self.total_w = float(sum(weights)) if weights else float(total_tasks)
        self.done_w = 0.0       # finished in this attempt
        self.cached_w = 0.0     # finished before this attempt (no time spent on them now)
        self.final_docs: int | None = None

    def skip(self, docs: int, weight: float = 1.0) -> None:
        """A partition finished in an earlier attempt: counted, not timed."""
        self.done += 1
        self.done_docs += docs
        self.cached_w += weight

    def _live(self) -> tuple[int, int]:
        if self.counter is None:
            return 0, 0
        return ray.get(self.counter.get.remote(self.key))

    def line(self) -> str:
        live_docs, nbytes = self._live()
        docs = self.final_docs if self.final_docs is not None else self.done_docs + live_docs
        dt = max(time.monotonic() - self.start, 1e-9)
        run_docs = max(docs - self.done_docs, 0)
        left = self.total_w - self.cached_w - self.done_w
        if self.final_docs is not None or left <= 0:
            eta = "done"
        elif self.done_w > 0:
            eta = "ETA " + format_seconds(dt * left / self.done_w)
        else:
            eta = "ETA ?"
        if self.counter is None and self.final_docs is None and not self.done_docs:  # a step with no documents
            return f"[{self.label}] {self.done}/{self.total} partitions | {format_seconds(dt)} | {eta}"
        return (f"[{self.label}] {self.done}/{self.total} partitions | {docs:,} docs | "
                f"{run_docs / dt:,.0f} docs/s | {nbytes / dt / 1e6:,.1f} MB/s | {format_seconds(dt)} | {eta}")

    def update(self, finished: int = 0, weight: float | None = None) -> None:
        self.done += finished
        self.done_w += finished if weight is None else weight
        now = time.monotonic()
        if self.tty:
            sys.stderr.write("\r" + self.line() + "\033[K")
            sys.stderr.flush()
        elif not self.quiet and now - self.last_log >= LOG_EVERY_S:
            print(self.line(), file=sys.stderr, flush=True)
            self.last_log = now

    def close(self, docs: int | None = None) -> None:
        """The closing line; `docs` is the stage's recorded total (what report.json will say)."""
        self.final_docs = docs
        if self.quiet:
            return
        line = self.line()
        sys.stderr.write(("\r" + line + "\033[K\n") if self.tty else line + "\n")
        sys.stderr.flush()


def say(quiet: bool, label: str, message: str) -> None:
    """A one-off stage line (`[2/6 heuristic_filter] nothing to do: ...`)."""
    if not quiet:
        print(f"[{label}] {message}", file=sys.stderr, flush=True)
