"""Ordering steps for the contract tests: wait for a state, not a while.

A durable queue answers on another thread (SQLite) or from a server
(Redis), so one ``sleep(0)`` is too short for a task that is meant to stay
blocked to have had its chance to go wrong: a ``join()`` that returns while
a task is unfinished needs a round trip to do so, and would still look
"not done yet" after it.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Loop turns that run any chain of wake-ups which stays within the loop
#: (a future set, the task woken, its next call sent) to its end.
LOOP_TURNS = 20
#: Round trips in a row: a task woken by the answer to one of its calls may
#: make another call before it settles (a join reads again after a wake-up).
ROUND_TRIPS = 3


async def _turns() -> None:
    for _ in range(LOOP_TURNS):
        await asyncio.sleep(0)


async def _round_trip(q: Any) -> None:
    astatistics = getattr(q, "astatistics", None)
    if astatistics is not None:
        await astatistics()
    else:
        # On the loop, but after the other tasks' calls: the database thread
        # answers in order, and the server has their commands first.
        q.statistics()


async def calls_answered(q: Any) -> None:
    """Return once the calls other tasks had started on ``q`` were answered
    and those tasks ran on: after it, a task still pending is blocked.

    Each of our round trips starts after the other tasks' calls were sent,
    so it is answered after them; a task that makes a further call gets
    another round. In-process queues answer at once: the loop turns are
    what they need.
    """
    await _turns()
    for _ in range(ROUND_TRIPS):
        await _round_trip(q)
        await _turns()
