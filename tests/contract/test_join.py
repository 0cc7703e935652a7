"""task_done() and join() keep the stdlib's meaning."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import wait_until
from tests.contract._ordering import calls_answered


async def test_join_waits_for_every_task_done(make_queue):
    q = await make_queue()
    await q.join()  # nothing put: returns at once
    await q.put_batch([1, 2])
    joiner = asyncio.create_task(q.join())
    await calls_answered(q)  # waiting before the first task_done(), which must not end it
    await q.get()
    q.task_done()
    await calls_answered(q)  # the joiner has looked, and was woken by the task_done()
    assert not joiner.done()
    await q.get()
    q.task_done()
    await asyncio.wait_for(joiner, 10)


async def test_task_done_too_many_times(make_queue):
    q = await make_queue()
    await q.put(1)
    await q.get()
    q.task_done()
    with pytest.raises(ValueError, match="too many"):
        q.task_done()
    assert q.statistics().unfinished_tasks == 0


async def test_cancelled_join_leaves_no_trace(make_queue):
    q = await make_queue()
    await q.put(1)
    joiner = asyncio.create_task(q.join())
    await calls_answered(q)  # the joiner is waiting, not on its way
    assert not joiner.done()
    joiner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await joiner
    await q.get()
    q.task_done()
    await asyncio.wait_for(q.join(), 10)


async def test_producer_consumer_written_for_asyncio_queue(make_queue):
    # The canonical asyncio.Queue example, unchanged but for the queue.
    q = await make_queue()
    total = 0

    async def worker():
        nonlocal total
        while True:
            item = await q.get()
            total += item
            q.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(3)]
    for i in range(100):
        q.put_nowait(i)
    await asyncio.wait_for(q.join(), 10)
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    assert total == sum(range(100))
    await wait_until(lambda: q.statistics().getters_waiting == 0)
