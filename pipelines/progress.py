"""Live progress of a stage: workers add counts to a tiny Ray actor, the driver draws them.

The actor asks for no CPU (it only adds integers), so it never competes with stage tasks for
the few cores of a small machine. On a terminal the line redraws in place; in CI (`quiet`) or when
stderr is not a terminal it prints at most one line every `LOG_EVERY_S` seconds.
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


class ProgressDisplay:
    def __init__(self, stage: str, total_tasks: int, counter, quiet: bool = False):
        self.stage, self.total, self.counter, self.quiet = stage, total_tasks, counter, quiet
        self.tty = sys.stderr.isatty() and not quiet
        self.start = self.last_log = time.monotonic()
        self.done = 0

    def _line(self) -> str:
        docs, nbytes = ray.get(self.counter.get.remote(self.stage))
        dt = max(time.monotonic() - self.start, 1e-9)
        return (f"[{self.stage}] {self.done}/{self.total} tasks | {docs:,} docs | "
                f"{docs / dt:,.0f} docs/s | {nbytes / dt / 1e6:,.1f} MB/s | {dt:,.0f}s")

    def update(self, finished: int = 0) -> None:
        self.done += finished
        now = time.monotonic()
        if self.tty:
            sys.stderr.write("\r" + self._line() + "\033[K")
            sys.stderr.flush()
        elif not self.quiet and now - self.last_log >= LOG_EVERY_S:
            print(self._line(), file=sys.stderr, flush=True)
            self.last_log = now

    def close(self) -> None:
        if self.quiet:
            return
        line = self._line()
        sys.stderr.write(("\r" + line + "\033[K\n") if self.tty else line + "\n")
        sys.stderr.flush()
