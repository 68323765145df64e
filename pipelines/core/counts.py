"""`Counts`: the one type for documents through a stage, for one partition or one whole source.

Every stage returns a `Counts` per partition; the executor adds them up per source and the run
report checks two identities with them (pipelines/core/report.py):

  per stage:   in = out + sum(removed.values()) + quarantined
  per source:  read by ingest = kept after the last stage + every removal + every quarantine

Besides the four counts, a stage may record additive `figures` (an int, or ints per reason: tokens,
`quarantine_reasons`, `removed_chars`, ...) that add up like the counts, and per-partition `notes`
(e.g. removed examples) that stay in the partition's completion marker and are never summed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CORE = ("source", "src_file", "read", "out", "removed", "quarantined", "chars_out")


@dataclass
class Counts:
    source: str
    read: int = 0                       # documents the stage received (report.json: `in`)
    out: int = 0                        # documents it passed on
    removed: dict[str, int] = field(default_factory=dict)  # per reason
    quarantined: int = 0                # unreadable records (ingest)
    chars_out: int = 0                  # characters of the documents passed on
    src_file: str | None = None         # the partition's input file; None for a source's total
    figures: dict[str, int | dict[str, int]] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    untouched: bool = False             # a source the stage passed through without reading it

    # -- partitions: the `stats` of a completion marker
    def partition_dict(self) -> dict:
        d = {"source": self.source, "read": self.read, "out": self.out, "removed": dict(sorted(self.removed.items())),
             "quarantined": self.quarantined, "chars_out": self.chars_out, **self.figures, **self.notes}
        if self.src_file is not None:
            d["src_file"] = self.src_file
        return d

    @classmethod
    def from_partition_dict(cls, d: dict) -> Counts:
        """Inverse of `partition_dict`: additive extras become figures, the rest notes."""
        figures, notes = {}, {}
        for key, value in d.items():
            if key in CORE:
                continue
            (figures if _additive(value) else notes)[key] = value
        return cls(source=d["source"], read=d["read"], out=d["out"], removed=dict(d["removed"]),
                   quarantined=d["quarantined"], chars_out=d["chars_out"], src_file=d.get("src_file"),
                   figures=figures, notes=notes)

    # -- sources: a row of report.json
    def add(self, other: Counts) -> None:
        """Add `other`'s counts and figures into this one (notes are per partition: not added)."""
        self.read += other.read
        self.out += other.out
        self.quarantined += other.quarantined
        self.chars_out += other.chars_out
        _add_into(self.removed, other.removed)
        for key, value in other.figures.items():
            if isinstance(value, dict):
                _add_into(self.figures.setdefault(key, {}), value)
            else:
                self.figures[key] = self.figures.get(key, 0) + value

    def source_dict(self) -> dict:
        d = {"in": self.read, "out": self.out, "removed": dict(sorted(self.removed.items())),
             "quarantined": self.quarantined, "chars_out": self.chars_out,
             **{k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in self.figures.items()}}
        if self.untouched:
            d["untouched"] = True
        return d

    @classmethod
    def passthrough(cls, source: str, upstream: Counts) -> Counts:
        """A source a stage does not touch: what came in goes out, unread."""
        return cls(source, read=upstream.out, out=upstream.out, chars_out=upstream.chars_out, untouched=True)


def _additive(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, dict) and bool(value) and all(isinstance(v, int) for v in value.values()))


def _add_into(into: dict[str, int], other: dict[str, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


def by_source(counts: list[Counts], sources=()) -> dict[str, Counts]:
    """Per-source totals of partition counts; every name in `sources` gets a row, even with no partition."""
    out = {name: Counts(name) for name in sources}
    for c in counts:
        out.setdefault(c.source, Counts(c.source)).add(c)
    return dict(sorted(out.items()))


def docs_in(stats: dict) -> int:
    """Documents a partition received, whatever the step calls them."""
    return int(stats.get("read", stats.get("docs", 0)))


def stage_line(counts: dict[str, Counts]) -> str:
    """A finished stage's totals, from the same figures report.json gets."""
    total_in = sum(c.read for c in counts.values())
    out = sum(c.out for c in counts.values())
    removed = sum(sum(c.removed.values()) for c in counts.values())
    quarantined = sum(c.quarantined for c in counts.values())
    return f"{total_in:,} docs in, {out:,} out, {removed:,} removed, {quarantined:,} quarantined"
