"""chute demo: the quick start. A queue in a SQLite file (no server),
filled with jobs that sleep a little and now and then fail, worked through
by an autoscaled pool, live; Ctrl-C stops it and the next run resumes."""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import time
from typing import Any

from .._open import open as open_queue
from .._workers import Workers, WorkerStatistics
from . import view as live
from .run import drive

QUEUE = "demo"
#: Seconds the jobs in hand get after Ctrl-C (a demo job takes at most 80 ms).
GRACE = 10.0


async def job(job: dict[str, Any], *, fail: float) -> None:
    """One demo job: some I/O, a flaky dependency, and one that never works."""
    await asyncio.sleep(job["ms"] / 1000)
    if job.get("poison"):
        raise ValueError(f"job {job['n']} can never succeed")
    if random.random() < fail:
        raise ConnectionError(f"job {job['n']}: a flaky dependency")


def demo(args: argparse.Namespace) -> int:
    url = f"sqlite:///{args.file}"
    out = live.console()
    live.log_to(out, tracebacks=False)

    def say(text: str) -> None:
        live.say(out, text)

    say(f"chute demo: a durable queue in {args.file} (SQLite, no server)")

    async def run() -> tuple[WorkerStatistics, live.Numbers, float]:
        # The demo's queue is its own: it may set its bounds.
        async with open_queue(url, QUEUE, max_deliveries=3) as q:
            s = await asyncio.to_thread(q.statistics)
            left = s.size + s.in_flight
            if left:
                say(f"  resuming: {left} jobs left from the last run")
            else:
                jobs = [
                    {"n": s.total_put + i, "ms": random.choice((5, 10, 20, 40, 80))}
                    for i in range(args.jobs)
                ]
                jobs[len(jobs) // 2]["poison"] = True  # one that ends in the dead letters
                # A twentieth wait a second in the queue before anyone takes
                # them, and a twentieth, put last, jump the line.
                few = args.jobs // 20
                plain, later, urgent = jobs[: len(jobs) - 2 * few], jobs[-2 * few : -few], []
                if few:
                    urgent = jobs[-few:]
                await q.put_batch(plain)
                if later:
                    await q.put_batch(later, delay=1.0)
                for one in urgent:
                    await q.put(one, priority=-1)
                left = args.jobs
                say(
                    f"  put {args.jobs} jobs (each sleeps 5-80 ms; {args.fail:.0%} of tries fail "
                    "and are retried; one always fails); Ctrl-C stops, run again to resume"
                )
                if few:
                    say(
                        f"  {len(later)} of them wait a second before anyone may take them "
                        f"(delay=1); the last {len(urgent)} jump the line (priority=-1)"
                    )
            workers: Workers[Any] = Workers(
                q,
                functools.partial(job, fail=args.fail),
                max_workers=args.max,
                retry_delay=0.05,
                grace=GRACE,
            )
            dead0 = s.dead_lettered

            def look() -> live.Numbers:
                return live.look(q, workers, dead_at_start=dead0, total=lambda s, d: left)

            view = live.View(out, look)
            t0 = time.monotonic()
            try:
                stats = await drive(workers, view, GRACE, until_empty=True)
            finally:
                final = await asyncio.to_thread(look)
                view.close(final)
            return stats, final, time.monotonic() - t0

    stats, final, elapsed = asyncio.run(run())
    s = final.queue
    left = s.size + s.in_flight
    say(
        f"handled {stats.processed} jobs in {elapsed:.1f} s ({stats.failed} failed tries, "
        f"{stats.retried} retried); dead letters {s.dead_lettered}; left in the queue {left}"
    )
    lost = max(0, s.unfinished_tasks - left)
    say(f"lost {lost}" + (f" — run `chute demo` again to finish the {left} left" if left else ""))
    return 0
