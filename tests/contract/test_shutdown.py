"""shutdown(): CPython 3.13's semantics on every Python, items never dropped silently."""

from __future__ import annotations

import asyncio
import sys

import pytest

import chute
from tests.conftest import wait_until
from tests.contract._ordering import calls_answered


async def test_put_after_shutdown_carries_the_item(make_queue):
    q = await make_queue()
    q.shutdown()
    with pytest.raises(chute.QueueShutDown) as info:
        await q.put("lost?")
    assert info.value.item == "lost?"
    with pytest.raises(chute.QueueShutDown) as info:
        q.put_nowait("nope")
    assert info.value.item == "nope"
    with pytest.raises(chute.QueueShutDown) as info:
        await q.put_batch([1, 2])
    assert info.value.items == [1, 2]
    assert q.empty()


async def test_gets_drain_then_raise(make_queue):
    q = await make_queue()
    await q.put_batch([1, 2, 3])
    assert q.shutdown() == []
    assert await q.get() == 1
    assert q.get_nowait() == 2
    assert await q.get_batch(5) == [3]
    with pytest.raises(chute.QueueShutDown):
        await q.get()
    with pytest.raises(chute.QueueShutDown):
        q.get_nowait()
    with pytest.raises(chute.QueueShutDown):
        await q.get_batch(5)


async def test_shutdown_wakes_blocked_getters_and_putters(make_queue):
    empty = await make_queue()
    full = await make_queue(maxsize=1)
    await full.put("kept")
    getter = asyncio.create_task(empty.get())
    putter = asyncio.create_task(full.put("refused"))
    await wait_until(lambda: empty.statistics().getters_waiting == 1)
    await wait_until(lambda: full.statistics().putters_waiting == 1)
    empty.shutdown()
    full.shutdown()
    with pytest.raises(chute.QueueShutDown):
        await asyncio.wait_for(getter, 10)
    with pytest.raises(chute.QueueShutDown) as info:
        await asyncio.wait_for(putter, 10)
    assert info.value.item == "refused"
    assert await full.get() == "kept"  # not immediate: still drains


async def test_immediate_shutdown_returns_what_it_removed(make_volatile_queue):
    q = await make_volatile_queue()
    await q.put_batch(["a", "b", "c"])
    joiner = asyncio.create_task(q.join())
    await calls_answered(q)  # the joiner waits before the shutdown
    assert q.shutdown(immediate=True) == ["a", "b", "c"]
    with pytest.raises(chute.QueueShutDown):
        await q.get()
    await asyncio.wait_for(joiner, 10)  # removed items count as done
    assert q.statistics().unfinished_tasks == 0
    assert q.shutdown(immediate=True) == []  # again: harmless


async def test_immediate_shutdown_makes_gets_raise_at_once(make_queue):
    q = await make_queue()
    await q.put_batch(["a", "b"])
    q.shutdown(immediate=True)
    assert q.statistics().shutdown
    with pytest.raises(chute.QueueShutDown):
        await q.get()
    with pytest.raises(chute.QueueShutDown):
        q.put_nowait("c")


async def test_immediate_shutdown_keeps_join_waiting_for_items_in_hand(make_volatile_queue):
    q = await make_volatile_queue()
    await q.put_batch([1, 2])
    assert await q.get() == 1  # in hand, not yet done
    assert q.shutdown(immediate=True) == [2]
    joiner = asyncio.create_task(q.join())
    await calls_answered(q)
    assert not joiner.done()
    q.task_done()
    await asyncio.wait_for(joiner, 10)


async def test_immediate_shutdown_keeps_every_stored_item(make_durable_queue):
    # Immediate stops the gets; it deletes nothing that was never delivered.
    q = await make_durable_queue()
    await q.put_batch(["a", "b", "c"])
    assert q.shutdown(immediate=True) == []
    with pytest.raises(chute.QueueShutDown):
        await q.get()
    assert q.qsize() == 3
    assert q.statistics().unfinished_tasks == 3
    q.reopen()
    assert await q.get_batch(10) == ["a", "b", "c"]


async def test_async_for_ends_when_shut_down_and_drained(make_queue):
    q = await make_queue()
    await q.put_batch([1, 2])
    seen = []

    async def consume():
        async for item in q:
            seen.append(item)

    task = asyncio.create_task(consume())
    await wait_until(lambda: len(seen) == 2 and q.statistics().getters_waiting == 1)
    await q.put(3)
    q.shutdown()
    await asyncio.wait_for(task, 10)
    assert seen == [1, 2, 3]


@pytest.mark.skipif(sys.version_info < (3, 13), reason="asyncio.QueueShutDown is new in 3.13")
async def test_stdlib_except_clauses_catch_it(make_queue):
    import queue

    q = await make_queue()
    q.shutdown()
    with pytest.raises(asyncio.QueueShutDown):
        await q.get()
    with pytest.raises(queue.ShutDown):
        q.put_nowait(1)
