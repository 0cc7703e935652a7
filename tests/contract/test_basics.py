"""put/get, order, sizes, bounds, timeouts, batches and bad arguments."""

from __future__ import annotations

import asyncio
import queue

import pytest

import chute
from tests.conftest import wait_until
from tests.contract._ordering import calls_answered


async def test_fifo_order_and_sizes(make_queue):
    q = await make_queue(maxsize=3)
    assert (q.maxsize, q.qsize(), q.empty(), q.full()) == (3, 0, True, False)
    for i in range(3):
        await q.put(i)
    assert (q.qsize(), q.empty(), q.full()) == (3, False, True)
    assert [await q.get() for _ in range(3)] == [0, 1, 2]
    assert q.empty()


async def test_lifo_and_priority_order(make_ordered_queue):
    lifo = await make_ordered_queue(kind="lifo")
    prio = await make_ordered_queue(kind="priority")
    for i in (3, 1, 2):
        await lifo.put(i)
        await prio.put((i, f"job{i}"))
    assert [lifo.get_nowait() for _ in range(3)] == [2, 1, 3]
    assert [(await prio.get())[0] for _ in range(3)] == [1, 2, 3]


async def test_unbounded_by_default(make_queue):
    q = await make_queue()
    assert q.maxsize == 0
    await q.put_batch(range(1000))
    assert not q.full()
    assert q.qsize() == 1000


@pytest.mark.parametrize(
    ("maxsize", "error"), [(-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)]
)
async def test_bad_maxsize_is_refused(make_queue, maxsize, error):
    with pytest.raises(error, match="maxsize"):
        await make_queue(maxsize=maxsize)


async def test_nowait_on_full_and_empty(make_queue):
    q = await make_queue(maxsize=1)
    with pytest.raises(chute.QueueEmpty):
        q.get_nowait()
    q.put_nowait("a")
    with pytest.raises(chute.QueueFull):
        q.put_nowait("b")
    assert q.qsize() == 1  # the refused item was not enqueued
    assert q.get_nowait() == "a"


async def test_errors_are_the_stdlib_ones_too(make_queue):
    q = await make_queue(maxsize=1)
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait(1)
    with pytest.raises(asyncio.QueueFull):
        q.put_nowait(2)
    with pytest.raises(queue.Full):
        q.put_nowait(2)


async def test_put_waits_while_full(make_queue):
    q = await make_queue(maxsize=1)
    await q.put("first")
    putter = asyncio.create_task(q.put("second"))
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    assert not putter.done()
    assert await q.get() == "first"
    await asyncio.wait_for(putter, 10)
    assert await q.get() == "second"


async def test_get_waits_while_empty(make_queue):
    q = await make_queue()
    getter = asyncio.create_task(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    await q.put("x")
    assert await asyncio.wait_for(getter, 10) == "x"


async def test_waiters_are_served_in_arrival_order(make_fair_queue):
    q = await make_fair_queue()
    order = []

    async def getter(name):
        order.append((name, await q.get()))

    tasks = []
    for n in range(3):
        tasks.append(asyncio.create_task(getter(n)))
        await wait_until(lambda n=n: q.statistics().getters_waiting == n + 1)
    for i in range(3):
        await q.put(i)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert order == [(0, 0), (1, 1), (2, 2)]


async def test_get_timeout(make_queue):
    q = await make_queue()
    with pytest.raises(TimeoutError):
        await q.get(timeout=0.01)
    with pytest.raises(TimeoutError):
        await q.get(timeout=0)
    assert q.statistics().getters_waiting == 0
    await q.put(1)
    assert await q.get(timeout=0) == 1


async def test_put_timeout_leaves_queue_unchanged(make_queue):
    q = await make_queue(maxsize=1)
    await q.put("kept")
    with pytest.raises(TimeoutError):
        await q.put("refused", timeout=0.01)
    with pytest.raises(TimeoutError):
        await q.put("refused", timeout=0)
    assert q.qsize() == 1
    assert q.statistics().putters_waiting == 0
    assert await q.get() == "kept"
    assert q.empty()


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1, ValueError), ("1", TypeError), (float("nan"), ValueError), (True, TypeError)],
)
async def test_bad_timeout_is_refused_at_the_call(make_queue, timeout, error):
    q = await make_queue()
    await q.put(1)
    with pytest.raises(error, match="timeout"):
        await q.get(timeout=timeout)
    with pytest.raises(error, match="timeout"):
        await q.put(2, timeout=timeout)
    assert q.qsize() == 1  # neither call touched the queue


async def test_get_batch(make_queue):
    q = await make_queue()
    await q.put_batch([1, 2, 3, 4, 5])
    assert await q.get_batch(3) == [1, 2, 3]
    assert await q.get_batch(10) == [4, 5]
    with pytest.raises(TimeoutError):
        await q.get_batch(10, timeout=0.01)
    waiter = asyncio.create_task(q.get_batch(10))
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    await q.put_batch([6, 7])
    assert await asyncio.wait_for(waiter, 10) == [6, 7]


@pytest.mark.parametrize(
    ("max_items", "error"), [(0, ValueError), (-1, ValueError), (2.0, TypeError)]
)
async def test_get_batch_bad_max_items(make_queue, max_items, error):
    q = await make_queue()
    await q.put(1)
    with pytest.raises(error, match="max_items"):
        await q.get_batch(max_items)
    assert q.qsize() == 1


async def test_put_batch_is_all_or_nothing(make_queue):
    q = await make_queue(maxsize=4)
    with pytest.raises(ValueError, match="can never fit"):
        await q.put_batch(range(5))
    assert q.empty()
    await q.put_batch([1, 2])
    with pytest.raises(TimeoutError):
        await q.put_batch([3, 4, 5], timeout=0.01)
    assert q.qsize() == 2  # none of the batch went in
    putter = asyncio.create_task(q.put_batch([3, 4, 5]))
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    assert await q.get() == 1
    await asyncio.wait_for(putter, 10)
    assert await q.get_batch(10) == [2, 3, 4, 5]


async def test_a_waiting_batch_keeps_its_place(make_fair_queue):
    q = await make_fair_queue(maxsize=2)
    await q.put_batch([1, 2])
    batch = asyncio.create_task(q.put_batch(["b1", "b2"]))
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    single = asyncio.create_task(q.put("s"))
    await wait_until(lambda: q.statistics().putters_waiting == 2)
    assert await q.get() == 1  # room for one: the single put must still wait its turn
    await calls_answered(q)
    assert not single.done()
    assert await q.get() == 2
    await asyncio.wait_for(batch, 10)
    assert await q.get_batch(2) == ["b1", "b2"]
    await asyncio.wait_for(single, 10)
    assert await q.get() == "s"


async def test_statistics(make_queue):
    q = await make_queue(maxsize=10)
    await q.put_batch(range(4))
    await q.get()
    s = q.statistics()
    assert isinstance(s, chute.QueueStatistics)
    assert (s.size, s.maxsize, s.total_put, s.total_got, s.peak_size) == (3, 10, 4, 1, 4)
    assert (s.in_flight, s.dead_lettered, s.unfinished_tasks, s.shutdown) == (0, 0, 4, False)
    with pytest.raises(AttributeError):
        s.size = 5  # frozen


@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_a_batch_giving_up_at_the_head_lets_the_next_putter_in(make_fair_queue, how):
    q = await make_fair_queue(maxsize=2)
    q.put_nowait("x")
    if how == "cancel":
        big = asyncio.create_task(q.put_batch(["a", "b"]))
    else:
        big = asyncio.create_task(q.put_batch(["a", "b"], timeout=0.05))
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    small = asyncio.create_task(q.put("c"))
    await wait_until(lambda: q.statistics().putters_waiting == 2)
    if how == "cancel":
        big.cancel()
    with pytest.raises((asyncio.CancelledError, TimeoutError)):
        await big
    await asyncio.wait_for(small, 10)  # there was room for it all along
    assert await q.get_batch(5) == ["x", "c"]


async def test_get_batch_leaves_items_promised_to_earlier_getters(make_fair_queue):
    q = await make_fair_queue()
    first = asyncio.create_task(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    q.put_nowait(1)  # promised to the waiting getter
    q.put_nowait(2)
    batch = await q.get_batch(10)
    assert len(batch) == 1  # one of the two was promised to the earlier getter
    assert sorted([*batch, await asyncio.wait_for(first, 10)]) == [1, 2]


async def test_infinite_timeout_means_no_limit(make_queue):
    q = await make_queue()
    getter = asyncio.create_task(q.get(timeout=float("inf")))
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    await q.put(1)
    assert await asyncio.wait_for(getter, 10) == 1
