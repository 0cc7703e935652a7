"""A cancelled or timed-out get/put completed or left the queue unchanged."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import wait_until


async def test_cancelled_get_takes_nothing(make_queue):
    q = await make_queue()
    getter = asyncio.create_task(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert q.statistics().getters_waiting == 0
    await q.put("x")
    assert q.get_nowait() == "x"


async def test_getter_cancelled_after_being_handed_an_item(make_queue):
    # The put notifies the waiting getter; the getter is cancelled before it
    # runs. The item must stay in the queue for the next getter.
    q = await make_queue()
    first = asyncio.create_task(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    second = asyncio.create_task(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 2)
    q.put_nowait("item")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 10) == "item"
    assert q.empty()


async def test_putter_cancelled_after_room_was_made(make_local_queue):
    q = await make_local_queue(maxsize=1)
    await q.put("a")
    first = asyncio.create_task(q.put("b"))
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    second = asyncio.create_task(q.put("c"))
    await wait_until(lambda: q.statistics().putters_waiting == 2)
    assert q.get_nowait() == "a"
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 10)  # the room passed on to the next putter
    assert q.get_nowait() == "c"
    assert q.empty()


async def test_putter_cancelled_while_room_is_made_loses_nothing(make_queue):
    # The cancel races the wake-up: in step it wins, across processes the
    # put may win. Either way each item is stored once and nobody is stuck.
    q = await make_queue(maxsize=1)
    await q.put("a")
    first = asyncio.create_task(q.put("b"))
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    second = asyncio.create_task(q.put("c"))
    await wait_until(lambda: q.statistics().putters_waiting == 2)
    assert q.get_nowait() == "a"
    first.cancel()
    (outcome,) = await asyncio.wait_for(asyncio.gather(first, return_exceptions=True), 10)
    got = [await q.get(timeout=10)]
    if isinstance(outcome, asyncio.CancelledError):
        assert got == ["c"]
    else:
        assert outcome is None
        assert got == ["b"]
        got.append(await q.get(timeout=10))
    await asyncio.wait_for(second, 10)
    assert got[-1] == "c"
    assert q.empty()


async def test_cancelled_put_enqueues_nothing(make_queue):
    q = await make_queue(maxsize=1)
    await q.put("a")
    putter = asyncio.create_task(q.put("b"))
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    putter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putter
    assert q.qsize() == 1
    assert q.get_nowait() == "a"
    assert q.empty()


@pytest.mark.parametrize("style", ["wait_for", "timeout", "native"])
async def test_timeouts_racing_a_put_lose_nothing(make_queue, style):
    # Many gets time out while items arrive; every item is got exactly once.
    q = await make_queue()
    got = []
    short = 0.0005 * make_queue.timescale

    async def get_once():
        if style == "wait_for":
            return await asyncio.wait_for(q.get(), short)
        if style == "timeout":
            async with asyncio.timeout(short):
                return await q.get()
        return await q.get(timeout=short)

    async def consumer():
        while len(got) < 300:
            try:
                got.append(await get_once())
            except TimeoutError:
                pass

    task = asyncio.create_task(consumer())
    for i in range(300):
        await q.put(i)
        if i % 7 == 0:
            await asyncio.sleep(short)
    await asyncio.wait_for(task, 30)
    assert got == list(range(300))
    assert q.empty()


async def test_batch_get_cancelled_takes_nothing(make_queue):
    q = await make_queue()
    getter = asyncio.create_task(q.get_batch(5))
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    q.put_nowait(1)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert q.get_nowait() == 1


async def test_batch_put_cancelled_enqueues_nothing(make_queue):
    q = await make_queue(maxsize=2)
    await q.put(0)
    putter = asyncio.create_task(q.put_batch([1, 2]))
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    putter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putter
    assert q.get_nowait() == 0
    assert q.empty()
