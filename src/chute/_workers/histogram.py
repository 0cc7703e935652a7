"""How long a pool's handlers take: cumulative counts per bucket, for
Prometheus (``chute.metrics``) and anyone who asks.

Kept as plain ints that the pool bumps itself (one bisect and two adds per
job, with no lock: the pool runs on one loop), and read when someone looks.
A ``prometheus_client.Histogram`` observed per job would take a lock and
cost several times as much on the pool's hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import NamedTuple

__all__ = ["BUCKETS", "HandlingTimes", "HistogramSnapshot"]

#: Upper bounds in seconds (Prometheus's defaults, and a minute for long
#: jobs); the last bucket, +Inf, is implied.
BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
)


class HistogramSnapshot(NamedTuple):
    """``buckets``: (upper bound, jobs that took at most that long),
    cumulative, ending with (inf, jobs); ``jobs``: how many were timed;
    ``total``: their seconds, summed."""

    buckets: tuple[tuple[float, int], ...]
    jobs: int
    total: float


class HandlingTimes:
    """Seconds per handled job, counted per bucket of ``BUCKETS``.

    ``cells``: jobs per bucket (not cumulative; the one after the last
    bound for longer ones), then the seconds summed: one list, so the pool
    bumps it with no attribute lookups.
    """

    __slots__ = ("cells",)

    def __init__(self) -> None:
        self.cells: list[float] = [0] * (len(BUCKETS) + 1) + [0.0]

    def observe(self, seconds: float) -> None:
        """Count one job (the pool does the same inline, for speed)."""
        cells = self.cells
        # bisect_left: a job of exactly 0.5 s belongs to the "le 0.5" bucket.
        cells[bisect_left(BUCKETS, seconds)] += 1
        cells[-1] += seconds

    def snapshot(self) -> HistogramSnapshot:
        cells = list(self.cells)  # one copy: the pool may go on meanwhile
        cumulative = []
        running = 0
        for bound, n in zip((*BUCKETS, float("inf")), cells[:-1], strict=True):
            running += int(n)
            cumulative.append((bound, running))
        return HistogramSnapshot(tuple(cumulative), running, cells[-1])
