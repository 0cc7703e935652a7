"""Schedules: an item put on a stored queue at fixed times, each time once,
by any number of schedulers at once.

``chute.every(60, item)`` or ``chute.cron("*/5 * * * *", item)`` says when;
a :class:`Scheduler` (``Workers(q, handler, schedules=[...])`` runs one, so
every ``chute worker`` process does) puts each slot's item shortly before
its time, as a delayed item. Bolt-on schedulers of other queues fire twice
when two run (rq-scheduler #312, django-q #231); here the store keeps, per
queue and schedule, the last slot put, and a put of a slot is stored only if
it is past that mark, in the same atomic step that moves the mark: whichever
scheduler comes first puts it, the others are told it is done. A scheduler
tries slots in order, so none is skipped while one runs; slots missed while
none ran are skipped, or the last ``catch_up`` of them put at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._exceptions import ChuteError, QueueShutDown

__all__ = ["Schedule", "Scheduler", "cron", "every"]

#: Seconds before its time that a slot's item is put (as a delayed item).
LOOKAHEAD = 1.0
#: The longest a scheduler sleeps between two looks at its schedules.
MAX_SLEEP = 30.0
#: Seconds before a slot that could not be put (the store away) is tried again.
RETRY = 1.0

logger = logging.getLogger("chute.schedules")


@dataclass(frozen=True)
class Schedule:
    """When to put what: ``name`` (the schedule's identity in the store: two
    schedules of one name on one queue are one), ``item`` (or a function of
    the slot's time, in Unix seconds, that makes it) and how many missed
    slots to put when a scheduler starts (``catch_up``)."""

    name: str
    item: Any
    catch_up: int
    #: The first slot strictly after a time, and the last strictly before.
    next_after: Callable[[float], float]
    last_before: Callable[[float], float]

    def item_for(self, slot: float) -> Any:
        return self.item(slot) if callable(self.item) else self.item

    def missed(self, now: float) -> list[float]:
        """The last ``catch_up`` slots before ``now``, oldest first."""
        slots: list[float] = []
        t = now
        for _ in range(self.catch_up):
            t = self.last_before(t)
            slots.append(t)
        return slots[::-1]


def _check_common(name: object, catch_up: object) -> None:
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string, not {name!r}")
    if isinstance(catch_up, bool) or not isinstance(catch_up, int) or catch_up < 0:
        raise ValueError(f"catch_up must be an int >= 0 (missed slots to put), not {catch_up!r}")


def every(
    seconds: float,
    item: Any,
    *,
    name: str | None = None,
    catch_up: int = 0,
    start: float = 0.0,
) -> Schedule:
    """Every ``seconds``, at ``start + k * seconds`` (Unix time: every 60 s
    falls on the minute)."""
    for label, number in (("seconds", seconds), ("start", start)):
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise TypeError(f"{label} must be a number, not {type(number).__name__}")
        if not math.isfinite(number):
            raise ValueError(f"{label} must be a finite number, not {number!r}")
    if not seconds >= 0.01:
        raise ValueError(f"seconds must be a finite number >= 0.01, not {seconds!r}")
    _check_common(name, catch_up)
    period = float(seconds)

    def next_after(t: float) -> float:
        return start + (math.floor((t - start) / period) + 1) * period

    def last_before(t: float) -> float:
        return start + (math.ceil((t - start) / period) - 1) * period

    return Schedule(name or f"every {period:g}s", item, catch_up, next_after, last_before)


def cron(expression: str, item: Any, *, name: str | None = None, catch_up: int = 0) -> Schedule:
    """At the times of a cron ``expression`` (``"*/5 * * * *"``: every five
    minutes), in UTC; parsed by croniter (``pip install 'chute[cron]'``)."""
    try:
        from croniter import croniter
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("chute.cron() needs croniter: pip install 'chute[cron]'") from exc
    if not isinstance(expression, str) or not croniter.is_valid(expression):
        raise ValueError(f"not a cron expression: {expression!r}")
    _check_common(name, catch_up)

    def step(t: float, forward: bool) -> float:
        it = croniter(expression, datetime.fromtimestamp(t, UTC))
        return float(it.get_next(float) if forward else it.get_prev(float))

    return Schedule(
        name or f"cron {expression}",
        item,
        catch_up,
        lambda t: step(t, True),
        lambda t: step(t, False),
    )


class Scheduler:
    """Puts the slots of ``schedules`` on the stored ``queue`` until cancelled
    (or the queue is shut down). Any number may run at once, in any
    processes: each slot is put once."""

    def __init__(self, queue: Any, schedules: Sequence[Schedule]) -> None:
        if not getattr(getattr(queue, "capabilities", None), "schedules", False):
            raise ValueError(
                f"{type(queue).__name__} cannot keep schedules: use a stored queue "
                "(SQLite, Redis, PostgreSQL)"
            )
        names = [s.name for s in schedules]
        if len(set(names)) != len(names):
            raise ValueError(f"two schedules of one name: {sorted(names)}")
        now = time.time()
        for s in schedules:  # an item the queue cannot store: refused here, not at its time
            queue._records([s.item_for(s.next_after(now))])
        self._queue = queue
        self._schedules = list(schedules)
        #: Slots put (or found put) by this scheduler.
        self.put = 0
        self.found_put = 0

    async def _put(self, schedule: Schedule, slot: float) -> None:
        stored = await self._queue._put_slot(
            schedule.item_for(slot), schedule=schedule.name, slot=slot, delay=slot - time.time()
        )
        if stored:
            self.put += 1
        else:
            self.found_put += 1

    async def run(self) -> None:
        now = time.time()
        # Per schedule, the slots still to try first (the missed ones caught
        # up), and the last slot tried.
        todo = {s.name: s.missed(now) for s in self._schedules}
        last = {s.name: now for s in self._schedules}
        try:
            while True:
                now = time.time()
                wake = now + MAX_SLEEP
                for s in self._schedules:
                    slots = todo[s.name]
                    slot = s.next_after(last[s.name])
                    while slot <= now + LOOKAHEAD:
                        slots.append(slot)
                        last[s.name] = slot
                        slot = s.next_after(slot)
                    while slots:
                        try:
                            await self._put(s, slots[0])
                        except QueueShutDown:
                            raise
                        except (TypeError, ValueError) as exc:  # its item function failed
                            logger.error("schedule %r: slot %r not put: %s", s.name, slots[0], exc)
                        except ChuteError as exc:  # the store is away: the same slot again soon
                            logger.warning(
                                "schedule %r: %s; trying again in %g s", s.name, exc, RETRY
                            )
                            wake = min(wake, time.time() + RETRY)
                            break
                        slots.pop(0)
                    wake = min(wake, slot - LOOKAHEAD)
                await asyncio.sleep(max(0.0, wake - time.time()))
        except QueueShutDown:
            return  # nothing more is put on a shut-down queue
