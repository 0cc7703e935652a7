"""Memory queues as code written for the stdlib uses them: a live maxsize,
attributes and mocks; and dead letters that say why an item died."""

from __future__ import annotations

import asyncio
import threading
import time
from unittest import mock

import pytest

import chute
from tests.conftest import wait_until

CLASSES = [chute.Queue, chute.LifoQueue, chute.PriorityQueue]


@pytest.mark.parametrize("cls", CLASSES)
async def test_every_memory_queue_and_its_face_take_attributes_and_mocks(cls):
    q = cls()
    q.Empty = asyncio.QueueEmpty  # as python-engineio's test suite does
    assert q.Empty is asyncio.QueueEmpty
    with mock.patch.object(q, "get", mock.AsyncMock(return_value=(0, "mocked"))):
        assert await q.get() == (0, "mocked")
    with mock.patch.object(q.sync, "get", return_value=(0, "mocked")):
        assert q.sync.get() == (0, "mocked")
    q.sync.Full = chute.QueueFull
    assert q.sync.Full is chute.QueueFull
    q.put_nowait((1, "real"))  # the real methods are back
    assert q.sync.get_nowait() == (1, "real")


@pytest.mark.parametrize("cls", CLASSES)
async def test_maxsize_assigned_on_either_face_wakes_putters_of_both_kinds(cls):
    q = cls(1)
    await q.put((0, "a"))
    done = threading.Event()

    def put_in_thread() -> None:
        q.sync.put((1, "thread"), timeout=10)
        done.set()

    thread = threading.Thread(target=put_in_thread)
    thread.start()
    task = asyncio.create_task(q.put((2, "task"), timeout=10))
    await wait_until(lambda: q.statistics().putters_waiting == 2)
    q.sync.maxsize = 3
    await asyncio.wait_for(task, 10)
    await asyncio.to_thread(thread.join, 10)
    assert done.is_set()
    assert (q.maxsize, q.qsize(), q.full()) == (3, 3, True)


async def test_an_unbounded_maxsize_releases_every_waiting_putter():
    q = chute.Queue(1)
    await q.put("a")
    putters = [asyncio.create_task(q.put(i, timeout=10)) for i in range(3)]
    await wait_until(lambda: q.statistics().putters_waiting == 3)
    q.maxsize = 0
    await asyncio.wait_for(asyncio.gather(*putters), 10)
    assert q.qsize() == 4
    q.put_nowait("more")  # the fast path knows it is unbounded again
    assert q.qsize() == 5


async def test_a_waiting_batch_that_a_lowered_bound_can_never_fit_raises_and_lets_others_in():
    q = chute.Queue(4)
    await q.put_batch(["a", "b", "c"])
    batch = asyncio.create_task(q.put_batch(["x", "y", "z"], timeout=10))
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    single = asyncio.create_task(q.put("s", timeout=10))
    await wait_until(lambda: q.statistics().putters_waiting == 2)
    q.maxsize = 2
    with pytest.raises(ValueError, match="can never fit a queue of maxsize 2"):
        await asyncio.wait_for(batch, 10)
    assert await q.get() == "a"
    assert await q.get() == "b"  # now below the bound: the single goes in
    await asyncio.wait_for(single, 10)
    assert [await q.get() for _ in range(2)] == ["c", "s"]


def test_a_blocked_sync_batch_that_a_lowered_bound_can_never_fit_raises():
    q = chute.Queue(3)
    q.sync.put_batch([1, 2])
    errors: list[BaseException] = []

    def put_batch() -> None:
        try:
            q.sync.put_batch([3, 4], timeout=10)
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=put_batch)
    thread.start()
    deadline = time.monotonic() + 10
    while q.statistics().putters_waiting != 1:
        assert time.monotonic() < deadline, "the batch never started waiting"
        time.sleep(0.001)
    q.sync.maxsize = 1
    thread.join(10)
    assert [str(e) for e in errors] == ["a batch of 2 items can never fit a queue of maxsize 1"]
    assert q.qsize() == 2


async def test_configure_checks_both_values_before_changing_either():
    q = chute.Queue(2, max_deliveries=3)
    with pytest.raises(ValueError, match="max_deliveries"):
        q.configure(maxsize=5, max_deliveries=0)
    assert q.maxsize == 2
    q.configure(maxsize=5, max_deliveries=None)
    assert q.maxsize == 5
    await q.put("x")
    for _ in range(5):  # no limit any more
        job = await q.reserve(timeout=10)
        job.nack()
        assert job.outcome == "retried"


async def test_delayed_items_are_counted_until_they_come_back():
    q = chute.Queue()
    await q.put_batch(["soon", "later"])
    # Long enough that the look below always comes before "soon" is back,
    # however loaded the machine (the reserve below waits for it anyway).
    (await q.reserve()).nack(delay=0.2)
    job = await q.reserve()
    job.nack(delay=60)
    assert job.outcome == "retried"
    s = q.statistics()
    assert (s.delayed, s.in_flight, s.size) == (2, 2, 0)
    again = await q.reserve(timeout=10)  # "soon" is back
    assert (again.item, again.deliveries) == ("soon", 2)
    assert q.statistics().delayed == 1
    again.ack()
    assert q.shutdown(immediate=True) == ["later"]
    assert q.statistics().delayed == 0


async def test_an_error_follows_its_item_through_a_delay_to_the_dead_letters():
    q = chute.PriorityQueue(max_deliveries=2)
    await q.put((1, "job"))
    job = await q.reserve()
    job.nack(delay=0.01, error=KeyError("missing"))
    job = await q.reserve(timeout=10)
    job.nack()
    assert job.outcome == "dead"
    [dead] = q.dead_letters()
    assert (dead.item, dead.deliveries, dead.reason) == ((1, "job"), 2, "failed")
    assert (dead.error_type, dead.error) == ("KeyError", "'missing'")
    assert dead.to_dict()["error_type"] == "KeyError"


async def test_an_error_is_forgotten_when_its_item_is_got_or_requeued():
    q = chute.Queue(max_deliveries=1)
    await q.put("x")
    (await q.reserve()).nack(error=RuntimeError("boom"))
    assert q.requeue_dead() == 1
    job = await q.reserve()
    job.nack()  # a fresh start: the old error is not this life's
    [dead] = q.purge_dead()
    assert (dead.error_type, dead.deliveries) == (None, 1)


def test_a_sync_reservation_left_by_an_exception_keeps_it():
    q = chute.LifoQueue(max_deliveries=1)
    q.sync.put("x")
    with pytest.raises(ZeroDivisionError), q.sync.reserve() as job:
        1 / 0  # noqa: B018
    assert job.outcome == "dead"
    [dead] = q.dead_letters()
    assert dead.error_type == "ZeroDivisionError"
    assert dead.traceback is not None
    assert "1 / 0" in dead.traceback


def test_priority_orders_only_along_the_heap_path_as_the_stdlib_does():
    # What the README can promise, exactly: equal items compare equal (a
    # dict is compared with ==, never <), so (1, {}) beside (1, {}) is
    # accepted, as by queue.PriorityQueue; an item whose comparison with one
    # on its path raises is refused at the put with the queue unchanged.
    q = chute.PriorityQueue()
    q.put_nowait((1, {}))
    q.put_nowait((1, {}))
    with pytest.raises(TypeError, match="'<' not supported"):
        q.put_nowait((1, {"a": 1}))
    assert q.qsize() == 2
    assert [q.get_nowait(), q.get_nowait()] == [(1, {}), (1, {})]
