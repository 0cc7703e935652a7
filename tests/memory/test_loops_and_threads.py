"""One queue, several event loops in several threads, and plain threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

import chute
from tests.conftest import LOOPS, loop_factory, wait_until

pytestmark = pytest.mark.timeout(60)


def test_created_without_a_loop_and_used_from_two_loops():
    q = chute.Queue(8)
    results = {}

    def run_loop(name, coro_fn):
        with asyncio.Runner(loop_factory=loop_factory(LOOPS[-1])) as r:
            results[name] = r.run(coro_fn())

    async def producer():
        for i in range(1000):
            await q.put(i)
        q.shutdown()
        return threading.get_ident()

    async def consumer():
        got = [item async for item in q]
        return got, threading.get_ident()

    threads = [
        threading.Thread(target=run_loop, args=("p", producer)),
        threading.Thread(target=run_loop, args=("c", consumer)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    got, consumer_thread = results["c"]
    assert got == list(range(1000))
    assert consumer_thread != results["p"]


async def test_a_waiter_resumes_on_its_own_loop_thread():
    q = chute.Queue()
    me = threading.get_ident()
    getter = asyncio.create_task(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 1)

    def other_thread():
        q.sync.put("from a thread")

    t = threading.Thread(target=other_thread)
    t.start()
    assert await asyncio.wait_for(getter, 10) == "from a thread"
    assert threading.get_ident() == me
    t.join(10)


async def test_no_task_is_created_per_notification():
    loop = asyncio.get_running_loop()
    created = 0
    default_factory = loop.get_task_factory()

    def counting_factory(loop, coro, **kwargs):
        nonlocal created
        created += 1
        if default_factory is not None:
            return default_factory(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    q = chute.Queue(1)

    async def producer():
        for i in range(200):
            await q.put(i)

    async def consumer():
        return [await q.get() for _ in range(200)]

    p = asyncio.create_task(producer())
    c = asyncio.create_task(consumer())
    loop.set_task_factory(counting_factory)
    try:
        thread = threading.Thread(target=lambda: [q.sync.put(x) for x in range(200, 300)])
        got = await asyncio.wait_for(c, 10)
        await p
        thread.start()
        got += [await q.get() for _ in range(100)]
        thread.join(10)
    finally:
        loop.set_task_factory(default_factory)
    assert got == list(range(300))
    assert created == 0


@pytest.mark.loops("asyncio")
async def test_nobody_is_notified_when_nobody_waits(monkeypatch):
    loop = asyncio.get_running_loop()
    calls = 0
    original = loop.call_soon_threadsafe

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    q = chute.Queue()
    t = threading.Thread(target=lambda: [q.sync.put(i) for i in range(100)])
    t.start()
    t.join(10)
    assert calls == 0  # nobody waited: no cross-thread wake-up at all
    assert [q.get_nowait() for _ in range(100)] == list(range(100))
    getter = asyncio.create_task(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    t = threading.Thread(target=q.sync.put, args=("wake",))
    t.start()
    assert await asyncio.wait_for(getter, 10) == "wake"
    t.join(10)
    assert calls == 1  # exactly one wake-up for the one waiter


def test_sync_and_async_waiters_share_one_order():
    q = chute.Queue()
    order = []
    ready = threading.Event()

    def thread_getter():
        order.append(("thread", q.sync.get(timeout=10)))

    async def main():
        async def task_getter():
            order.append(("task", await q.get()))

        first = asyncio.create_task(task_getter())
        await wait_until(lambda: q.statistics().getters_waiting == 1)
        t = threading.Thread(target=thread_getter)
        t.start()
        await wait_until(lambda: q.statistics().getters_waiting == 2)
        third = asyncio.create_task(task_getter())
        await wait_until(lambda: q.statistics().getters_waiting == 3)
        for i in range(3):
            q.put_nowait(i)
            await wait_until(lambda i=i: len(order) == i + 1)
        await asyncio.gather(first, third)
        t.join(10)
        ready.set()

    asyncio.run(main())
    assert ready.is_set()
    assert order == [("task", 0), ("thread", 1), ("task", 2)]


def test_closed_loop_waiter_does_not_strand_an_item():
    q = chute.Queue()
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)  # "destroyed but pending"
    task = loop.create_task(q.get())
    loop.run_until_complete(asyncio.sleep(0))  # the task is now waiting
    assert q.statistics().getters_waiting == 1
    loop.close()  # closed with the task still pending
    other = []
    t = threading.Thread(target=lambda: other.append(q.sync.get(timeout=10)))
    t.start()
    for _ in range(10_000):
        if q.statistics().getters_waiting == 2:
            break
        threading.Event().wait(0.001)
    q.put_nowait("item")  # notifies the dead waiter first; must pass on
    t.join(10)
    assert other == ["item"]
    del task
