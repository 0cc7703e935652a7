"""Workers keep the lease of every job they handle, on every queue that
hands out leases: a handler longer than the visibility timeout runs once,
and a lease lost anyway stops the handler's claim on its item."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

import chute

pytestmark = pytest.mark.timeout(120)

LEASE = 0.4


async def test_a_handler_three_times_as_long_as_the_lease_runs_exactly_once(make_stored):
    q = await make_stored(visibility_timeout=LEASE)
    calls: list[int] = []

    async def handle(item: int) -> None:
        calls.append(item)
        await asyncio.sleep(3 * LEASE)

    await q.put(1)
    q.shutdown()
    # Two workers: the idle one would take the item again the moment its
    # lease ran out.
    workers = chute.Workers(q, handle, min_workers=2, max_workers=2, scale_every=None)
    stats = await asyncio.wait_for(workers.run(), 30)
    assert calls == [1]
    assert (stats.processed, stats.failed, stats.retried) == (1, 0, 0)
    s = await q.astatistics()
    assert (s.size, s.in_flight, s.unfinished_tasks, s.dead_lettered) == (0, 0, 0, 0)


async def test_a_blocking_handler_s_lease_is_kept_from_the_pool_s_own_threads(make_stored):
    q = await make_stored(visibility_timeout=LEASE)
    calls: list[int] = []

    def handle(item: int) -> None:  # runs in the pool's thread; the loop keeps the lease
        calls.append(item)
        threading.Event().wait(3 * LEASE)

    await q.put(1)
    q.shutdown()
    workers = chute.Workers(q, handle, min_workers=2, max_workers=2, scale_every=None)
    stats = await asyncio.wait_for(workers.run(), 30)
    assert calls == [1]
    assert (stats.processed, stats.failed) == (1, 0)


async def test_a_lease_lost_anyway_cancels_the_handler_and_leaves_the_item_to_its_holder(
    make_stored, caplog
):
    q = await make_stored(visibility_timeout=LEASE)
    url, name = make_stored.address(q)
    started, taken_over = threading.Event(), threading.Event()
    cancelled = asyncio.Event()
    held: list[tuple[Any, int]] = []

    async def take_it() -> None:
        # The same visibility timeout: on Redis a lease runs out after the
        # claimer's, not the holder's.
        async with chute.open(url, name, visibility_timeout=LEASE) as other:
            assert started.wait(10)
            async with other.reserve(timeout=10) as job:  # once the lease ran out
                held.append((job.item, job.deliveries))
            taken_over.set()  # and settled by its new holder

    def take_over() -> None:
        # Another client, with a loop of its own, while this process's loop
        # is stalled (the keeper cannot run meanwhile).
        asyncio.run(take_it())

    async def handle(item: str) -> None:
        started.set()
        assert taken_over.wait(10)  # blocks the loop: a process that stalled
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await q.put("job")
    thief = asyncio.create_task(asyncio.to_thread(take_over))
    workers = chute.Workers(q, handle, max_workers=1, scale_every=None)
    with caplog.at_level(logging.WARNING, logger="chute.workers"):
        running = asyncio.create_task(workers.run())
        await asyncio.wait_for(cancelled.wait(), 10)
        await asyncio.wait_for(thief, 10)
        assert held == [("job", 2)]
        q.shutdown()
        stats = await asyncio.wait_for(running, 30)
    assert (stats.processed, stats.failed, stats.retried, stats.dead) == (0, 1, 0, 0)
    assert any("lease" in r.getMessage() for r in caplog.records if r.name == "chute.workers")
    s = await q.astatistics()
    assert (s.size, s.in_flight, s.unfinished_tasks, s.dead_lettered) == (0, 0, 0, 0)
