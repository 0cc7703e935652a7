"""The autoscaling policy of ``Workers``, as one pure function.

Grow when there is a backlog no idle worker can take and that would not be
drained before the next look at the current pace: doubling, never beyond
the backlog or the most workers. Shrink only after ``QUIET_LOOKS`` looks in
a row that found idle workers and an empty queue, by half of the idle ones,
never below the fewest. Growing is quick and shrinking slow, so the pool
does not flap.
"""

from __future__ import annotations

#: Looks in a row that must find idle workers and no backlog before shrinking.
QUIET_LOOKS = 3


def plan(
    *,
    workers: int,
    idle: int,
    depth: int,
    pace: float | None,
    stuck: bool,
    look: float,
    quiet: int,
    bounds: tuple[int, int],
) -> tuple[int, int]:
    """What one look decides: (workers to add, or to stop if negative; the
    count of quiet looks in a row now). ``pace`` is the mean handling time
    (``None`` before the first item), ``stuck`` whether nothing finished
    since the last look, ``look`` the seconds until the next one."""
    fewest, most = bounds
    backlog = depth > 0 and idle == 0
    slow = workers == 0 or stuck or pace is None or depth * pace / workers > look
    if backlog and slow:
        return max(0, min(most - workers, max(1, min(workers, depth)))), 0
    if idle > 0 and depth == 0:
        quiet += 1
        if quiet < QUIET_LOOKS:
            return 0, quiet
        return -max(0, min(workers - fewest, max(1, idle // 2))), 0
    return 0, 0
