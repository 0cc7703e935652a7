"""In-process details beyond the shared contract."""

from __future__ import annotations

import asyncio
import threading

import pytest

import chute
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(30)


async def test_priority_give_back_keeps_priority_order():
    q = chute.PriorityQueue()
    await q.put_batch([(2, "b"), (1, "a"), (3, "c")])
    with pytest.raises(RuntimeError):
        async with q.reserve() as job:
            assert job.item == (1, "a")
            raise RuntimeError
    await q.put((0, "urgent"))
    assert [await q.get() for _ in range(4)] == [(0, "urgent"), (1, "a"), (2, "b"), (3, "c")]


async def test_lifo_give_back_goes_on_top():
    q = chute.LifoQueue()
    await q.put_batch([1, 2, 3])
    job = await q.reserve()
    assert job.item == 3
    job.nack()
    assert await q.get_batch(3) == [3, 2, 1]


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (1.0, TypeError), (True, TypeError)])
def test_bad_max_deliveries(value, error):
    with pytest.raises(error, match="max_deliveries"):
        chute.Queue(max_deliveries=value)


async def test_requeue_dead_after_shutdown_is_refused_and_keeps_them():
    q = chute.Queue(max_deliveries=1)
    await q.put("x")
    (await q.reserve()).nack()
    q.shutdown()
    with pytest.raises(chute.QueueShutDown):
        q.requeue_dead()
    assert [d.item for d in q.purge_dead()] == ["x"]


async def test_requeued_dead_letter_wakes_a_waiting_getter():
    q = chute.Queue(max_deliveries=1)
    await q.put("x")
    (await q.reserve()).nack()
    getter = asyncio.create_task(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    assert q.requeue_dead() == 1
    assert await asyncio.wait_for(getter, 10) == "x"


def test_nack_with_delay_from_a_plain_thread():
    q = chute.Queue()
    q.sync.put("x")
    job = q.sync.reserve().__enter__()
    job.nack(delay=0.01)
    with q.sync.reserve(timeout=10) as again:
        assert (again.item, again.deliveries) == ("x", 2)
    q.sync.join()


def test_sync_join_waits_for_a_consumer_thread():
    q = chute.Queue()
    q.sync.put_batch(range(10))
    seen = []

    def consumer():
        for _ in range(10):
            seen.append(q.sync.get())
            q.sync.task_done()

    t = threading.Thread(target=consumer)
    t.start()
    q.sync.join()
    assert seen == list(range(10))
    t.join(10)


def test_sync_put_batch_too_large():
    q = chute.Queue(2)
    with pytest.raises(ValueError, match="can never fit"):
        q.sync.put_batch([1, 2, 3])
    assert q.empty()


def test_reprs_and_flags():
    q = chute.Queue(3)
    q.put_nowait(1)
    assert repr(q) == "<chute.Queue maxsize=3 qsize=1 open>"
    assert "sync face" in repr(q.sync)
    assert q.sync.async_queue is q
    assert not q.is_shutdown
    assert not q.sync.is_shutdown
    job = q.sync.reserve().__enter__()
    assert "in flight" in repr(job)
    job.ack()
    assert "settled" in repr(job)
    q.shutdown(immediate=True)
    assert q.sync.is_shutdown
    assert repr(q).endswith("shut down (immediate)>")
    assert q.sync.statistics().shutdown


async def test_getter_woken_from_a_thread_after_its_batch_put():
    q = chute.Queue(4)
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await wait_until(lambda: q.statistics().getters_waiting == 3)
    t = threading.Thread(target=q.sync.put_batch, args=([1, 2, 3],))
    t.start()
    assert sorted(await asyncio.wait_for(asyncio.gather(*getters), 10)) == [1, 2, 3]
    t.join(10)


async def test_peak_size_is_exact_through_every_way_out():
    q = chute.Queue()
    model_size = model_peak = 0

    def grew(n):
        nonlocal model_size, model_peak
        model_size += n
        model_peak = max(model_peak, model_size)

    steps = [
        (lambda: q.put_batch(range(5)), 5),
        (lambda: q.get_batch(3), -3),
        (lambda: q.put(1), 1),
        (lambda: q.get(), -1),
        (lambda: q.put_batch(range(7)), 7),
        (lambda: asyncio.to_thread(q.sync.get), -1),
        (lambda: asyncio.to_thread(q.sync.put, 9), 1),
        (lambda: q.reserve(), -1),
    ]
    for make, delta in steps:
        await make()
        grew(delta)
        s = q.statistics()
        assert (s.size, s.peak_size) == (model_size, model_peak)
    q.get_nowait()
    assert q.shutdown(immediate=True)
    assert q.statistics().peak_size == model_peak == 9


def test_delayed_nack_outlives_the_loop_that_made_it():
    q = chute.Queue()
    q.put_nowait("job")

    async def worker():
        (await q.reserve()).nack(delay=0.02)

    asyncio.run(worker())  # this loop is gone before the delay passes

    async def consumer():
        return await q.get(timeout=10)

    assert asyncio.run(consumer()) == "job"


def test_huge_timeouts_on_the_thread_face():
    q = chute.Queue(1)
    t = threading.Thread(target=lambda: q.sync.put("x", timeout=1e10))
    t.start()
    assert q.sync.get(timeout=float("inf")) == "x"
    t.join(10)
    q.sync.put("y", timeout=1e10)
    assert q.sync.get(timeout=1e10) == "y"


class Unordered:
    def __lt__(self, other):
        raise TypeError("cannot order these")


async def test_priority_refuses_items_it_cannot_order_and_stays_unchanged():
    q = chute.PriorityQueue()
    await q.put_batch([(1, "a"), (2, "b"), (3, "c")])
    with pytest.raises(TypeError):
        await q.put(Unordered())
    with pytest.raises(TypeError):
        await q.put_batch([(0, "z"), Unordered()])  # all or nothing
    s = q.statistics()
    assert (s.size, s.unfinished_tasks) == (3, 3)
    assert await q.get_batch(5) == [(1, "a"), (2, "b"), (3, "c")]


async def test_priority_get_that_cannot_order_leaves_the_items():
    q = chute.PriorityQueue()
    await q.put_batch([(0, {}), (1, {"x": 1}), (1, {"y": 2})])
    with pytest.raises(TypeError):
        q.get_nowait()  # ordering the two (1, {...}) items fails
    assert q.qsize() == 3
    s = q.statistics()
    assert (s.size, s.unfinished_tasks) == (3, 3)


def test_sync_nonblocking_forms_are_exactly_the_nowait_ones():
    async def main():
        q = chute.Queue(1)
        getter = asyncio.create_task(q.get())
        await wait_until(lambda: q.statistics().getters_waiting == 1)
        q.put_nowait("x")  # promised to the waiting task
        assert q.sync.get(block=False) == "x"  # queue.Queue: get(False) == get_nowait()
        q.put_nowait("y")
        with pytest.raises(chute.QueueFull):
            q.sync.put("z", block=False)
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        assert q.sync.get(block=False, timeout=-5) == "y"  # timeout ignored, as queue.Queue

    asyncio.run(main())


async def test_immediate_shutdown_hands_back_delayed_items():
    q = chute.Queue()
    await q.put("later")
    job = await q.reserve()
    job.nack(delay=60)
    assert q.shutdown(immediate=True) == ["later"]
    assert q.statistics().in_flight == 0


async def test_requeue_dead_is_all_or_nothing_when_an_item_cannot_be_ordered():
    q = chute.PriorityQueue(max_deliveries=1)
    await q.put_batch([(1, {"a": 1}), (2, "b")])
    for _ in range(2):
        (await q.reserve()).nack()
    await q.put((1, {"c": 3}))  # (1, {...}) against (1, {...}) cannot be ordered
    with pytest.raises(TypeError):
        q.requeue_dead()
    assert [d.item for d in q.dead_letters()] == [(1, {"a": 1}), (2, "b")]  # none lost
    assert q.qsize() == 1
