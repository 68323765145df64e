"""Task groups: many partitions in one Ray task (or actor call), so that tens of thousands of small
input files do not each cost a task, a scheduling round and, in dedup, `partitions` shuffle objects.

A group is a list of partitions in file order; its task runs the per-partition function on each
in turn, so naming, `nemo_id`, markers, per-task logs, resume and accounting stay per input file
and the outputs are the same bytes whatever the grouping. The rule (`task_groups`):

- partitions are taken in order and added to the open group of their key (`group_of`: e.g. the host
  a remote file is read from; a group never mixes keys, so a per-host cap counts a group as one
  connection);
- a group is closed when the next partition would take it past `target_bytes` of input or when it
  holds `max_files` partitions; a partition larger than the target is a group of its own; remote
  files, whose size is not listed (1 byte each), are bounded by `max_files` alone;
- groups come in the order of their first partition.

`group_target` picks the byte target: `ray.task_group_mb`, lowered so that there are at least
`ray.task_group_waves` groups per task slot of the cluster when the input allows, so that a small
input still uses every core and the last wave is short.

This module imports nothing from the project.
"""

from __future__ import annotations

from typing import Hashable, Sequence


def task_groups(sizes: Sequence[float], target_bytes: float, max_files: int,
                keys: Sequence[Hashable] | None = None) -> list[list[int]]:
    """Indices `0..len(sizes)-1` packed into groups (see the module doc); each group in order."""
    if max_files < 1:
        raise ValueError(f"max_files must be >= 1, got {max_files}")
    open_groups: dict = {}  # key -> [indices, bytes] of the group still filling
    groups: list[list[int]] = []
    for i, size in enumerate(sizes):
        key = keys[i] if keys is not None else None
        group = open_groups.get(key)
        if group is None or len(group[0]) >= max_files or group[1] + size > target_bytes:
            group = open_groups[key] = [[], 0.0]
            groups.append(group[0])
        group[0].append(i)
        group[1] += size
    return groups


def group_target(sizes: Sequence[float], target_mb: float, waves: int, slots: int) -> float:
    """Bytes per group: `target_mb` MiB, or less so that the input makes `waves x slots` groups."""
    target = float(target_mb) * (1 << 20)
    if waves > 0 and slots > 0 and sizes:
        target = min(target, sum(sizes) / (waves * slots))
    return target
