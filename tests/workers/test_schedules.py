"""Schedules: each slot put once, however many schedulers run (three here,
in three processes), on every stored queue; missed slots skipped or caught
up; Workers running one; bad schedules refused."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import time
from typing import Any

import pytest

import chute
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(120)

PERIOD = 0.2
_SPAWN = mp.get_context("spawn")


#: How long the three schedulers run together, from when all are ready.
TOGETHER = 2.0


def _schedule_in_a_process(url: str, name: str, schedule: str, ready: Any, go: Any) -> None:
    """A scheduler of its own, in another process, for ``TOGETHER`` seconds
    from ``go`` (set once every process has said it is ``ready``: a process
    slow to start must not shorten the others' overlap)."""

    async def run() -> None:
        async with chute.open(url, name) as q:
            scheduler = chute.Scheduler(q, [chute.every(PERIOD, _slot, name=schedule)])
            ready.set()
            await asyncio.to_thread(go.wait, 60)
            task = asyncio.create_task(scheduler.run())
            await asyncio.sleep(TOGETHER)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(run())


def _slot(slot: float) -> float:
    return slot


async def _drain(q: Any) -> list[float]:
    got: list[float] = []
    while True:
        try:
            got += await q.get_batch(100, timeout=0)
        except TimeoutError:
            return got


def _consecutive(slots: list[float]) -> bool:
    return all(abs(b - a - PERIOD) < 1e-6 for a, b in itertools.pairwise(slots))


async def test_three_schedulers_in_three_processes_put_each_slot_once(make_stored):
    q = await make_stored()
    url, _name = make_stored.address(q)
    readies = [_SPAWN.Event() for _ in range(3)]
    go = _SPAWN.Event()
    procs = [
        _SPAWN.Process(target=_schedule_in_a_process, args=(url, q.name, "tick", ready, go))
        for ready in readies
    ]
    for p in procs:
        p.start()
    try:
        for ready in readies:
            assert await asyncio.to_thread(ready.wait, 60), "a scheduler process never started"
        go.set()
        for p in procs:
            await asyncio.to_thread(p.join, 60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    await asyncio.sleep(1.5)  # the last ones put come due
    slots = await _drain(q)
    assert len(slots) == len(set(slots)), "a slot was put twice"
    slots.sort()
    assert len(slots) >= 3
    assert _consecutive(slots), f"a slot was skipped: {slots}"


async def _run_for(q: Any, schedule: chute.Schedule, n: int) -> chute.Scheduler:
    """A scheduler of ``schedule`` until it has put ``n`` slots (or found them put)."""
    scheduler = chute.Scheduler(q, [schedule])
    task = asyncio.create_task(scheduler.run())
    try:
        await wait_until(lambda: scheduler.put + scheduler.found_put >= n, timeout=20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return scheduler


async def test_slots_missed_while_no_scheduler_ran_are_skipped_or_the_last_caught_up(
    make_stored,
):
    q = await make_stored()
    # Skipped: a scheduler that starts later puts only slots to come.
    await _run_for(q, chute.every(PERIOD, _slot, name="skip"), 2)
    await asyncio.sleep(1.5)  # the last ones put come due
    before = sorted(await _drain(q))
    await asyncio.sleep(4 * PERIOD)  # four slots or so missed
    started = time.time()
    await _run_for(q, chute.every(PERIOD, _slot, name="skip"), 1)
    await asyncio.sleep(1.5)
    after = sorted(await _drain(q))
    assert after
    assert all(slot > started for slot in after)
    assert after[0] - before[-1] >= 4 * PERIOD - 1e-6

    # Caught up: the last two missed slots, at once.
    await _run_for(q, chute.every(PERIOD, _slot, name="catch"), 2)
    await asyncio.sleep(1.5)
    before = sorted(await _drain(q))
    await asyncio.sleep(4 * PERIOD)
    # Just past a slot (slots fall on multiples of PERIOD): no slot comes
    # between `started` and the scheduler's start, whose last two missed
    # slots are then exactly those before `started`.
    await asyncio.sleep(PERIOD - time.time() % PERIOD + PERIOD / 10)
    started = time.time()
    scheduler = await _run_for(q, chute.every(PERIOD, _slot, name="catch", catch_up=2), 2)
    assert scheduler.put >= 2
    await asyncio.sleep(1.5)
    after = sorted(await _drain(q))
    missed = [s for s in after if s < started]
    assert len(missed) == 2
    assert missed[0] > before[-1] + PERIOD
    assert _consecutive(after)


async def test_workers_run_the_schedules_they_are_given(make_stored):
    q = await make_stored()
    handled: list[float] = []

    async def handle(slot: float) -> None:
        handled.append(slot)

    workers = chute.Workers(q, handle, schedules=[chute.every(PERIOD, _slot)], scale_every=None)
    async with workers:
        await wait_until(lambda: len(handled) >= 3, timeout=20)
    assert handled == sorted(handled)
    assert _consecutive(handled)
    assert all(s <= time.time() for s in handled)  # none handled before its time


def test_a_cron_schedule_falls_on_its_times():
    five = chute.cron("*/5 * * * *", "report")
    t = 1_700_000_123.0  # 2023-11-14 22:15:23 UTC
    assert five.next_after(t) == 1_700_000_400.0  # 22:20:00
    assert five.last_before(t) == 1_700_000_100.0  # 22:15:00
    assert five.item_for(five.next_after(t)) == "report"
    assert five.name == "cron */5 * * * *"
    every_minute = chute.every(60, None, catch_up=3)
    assert every_minute.next_after(t) == 1_700_000_160.0
    assert every_minute.missed(t) == [1_699_999_980.0, 1_700_000_040.0, 1_700_000_100.0]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: chute.every(0, "x"), ValueError),
        (lambda: chute.every(-1, "x"), ValueError),
        (lambda: chute.every(float("nan"), "x"), ValueError),
        (lambda: chute.every("1", "x"), TypeError),
        (lambda: chute.every(1, "x", catch_up=-1), ValueError),
        (lambda: chute.every(1, "x", name=""), ValueError),
        (lambda: chute.every(1, "x", start=float("nan")), ValueError),
        (lambda: chute.every(1, "x", start="0"), TypeError),
        (lambda: chute.cron("every minute", "x"), ValueError),
        (lambda: chute.cron("61 * * * *", "x"), ValueError),
    ],
)
def test_a_schedule_that_does_not_parse_is_refused(make, error):
    with pytest.raises(error):
        make()


async def test_a_queue_that_cannot_keep_schedules_and_twin_names_are_refused(make_stored):
    with pytest.raises(ValueError, match="cannot keep schedules"):
        chute.Scheduler(chute.Queue(), [chute.every(1, "x")])
    with pytest.raises(ValueError, match="cannot keep schedules"):
        chute.Workers(chute.Queue(), print, schedules=[chute.every(1, "x")])
    q = await make_stored()
    with pytest.raises(ValueError, match="two schedules of one name"):
        chute.Scheduler(q, [chute.every(1, "x", name="a"), chute.every(2, "y", name="a")])
    # An item the queue's codec cannot store: at the call, not silently at its time.
    with pytest.raises(TypeError, match="the json codec cannot encode object item"):
        chute.Workers(q, print, schedules=[chute.every(1, object())])
    assert q.qsize() == 0
