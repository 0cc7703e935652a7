"""put(delay=, priority=, key=) on the in-process queues, beyond the shared
contract (tests/contract/test_put_options.py runs that on chute.Queue)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

import chute
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(30)

DUE = 0.2


@pytest.mark.parametrize("cls", [chute.LifoQueue, chute.PriorityQueue])
async def test_lifo_and_priority_queues_refuse_priority_and_store_nothing(cls):
    q = cls()
    with pytest.raises(ValueError, match=r"priority=.*chute\.Queue"):
        await q.put((1, "x"), priority=1)
    with pytest.raises(ValueError, match="priority="):
        q.put_nowait((1, "x"), priority=1)
    with pytest.raises(ValueError, match="priority="):
        q.sync.put_batch([(1, "x")], priority=1)
    assert q.statistics().total_put == 0
    assert not cls.capabilities.prioritised_puts


async def test_lifo_delayed_item_goes_on_top_when_due():
    q = chute.LifoQueue()
    await q.put("late", delay=DUE)
    await q.put_batch(["a", "b"])
    assert q.qsize() == 3
    assert await q.get() == "b"
    await wait_until(lambda: q.statistics().scheduled == 0)  # "late" is due: the newest
    assert await q.get_batch(3) == ["late", "a"]


async def test_priority_queue_orders_a_delayed_item_by_value_when_due():
    q = chute.PriorityQueue()
    await q.put((0, "first, once due"), delay=DUE)
    await q.put((5, "routine"), key="r")
    got = await q.get(timeout=10)
    assert got == (5, "routine")  # the delayed one was not due
    assert await q.put((5, "routine again"), key="r") is True  # freed by the get
    await wait_until(lambda: q.statistics().scheduled == 0)
    assert await q.get_batch(2) == [(0, "first, once due"), (5, "routine again")]


async def test_a_delayed_item_that_cannot_be_ordered_when_due_is_dead_lettered():
    # Nobody waits on the put when the item comes due, so the error cannot
    # reach the caller: the item goes to the dead letters, with why.
    q = chute.PriorityQueue()
    await q.put((1, {}))
    await q.put((1, {"late": True}), delay=0.05)
    await wait_until(q.dead_letters)
    [dead] = q.dead_letters()
    assert dead.item == (1, {"late": True})
    assert dead.error_type == "TypeError"
    s = q.statistics()
    assert (s.size, s.scheduled, s.unfinished_tasks) == (1, 0, 1)
    assert await q.get() == (1, {})


async def test_first_priority_ranks_a_fifo_in_place():
    q = chute.Queue()
    await q.put_batch(["a", "b"])
    job = await q.reserve()
    job.nack()  # "a" back in front
    await q.put("c", priority=1)
    await q.put("d", priority=-1)
    await q.put("e")
    assert await q.get_batch(5) == ["d", "a", "b", "e", "c"]
    # Ranked now: a plain put and get still work, in order.
    q.put_nowait(1)
    q.sync.put(2)
    assert [q.get_nowait(), q.sync.get()] == [1, 2]


async def test_a_given_back_prioritised_item_goes_in_front_of_its_equals():
    q = chute.Queue()
    await q.put("x", priority=3)
    await q.put("y", priority=3)
    await q.put("z", priority=4)
    job = await q.reserve()
    assert job.item == "x"
    job.nack()
    job = await q.reserve()
    assert job.item == "x"
    job.ack()
    assert await q.get_batch(3) == ["y", "z"]


async def test_immediate_shutdown_hands_back_scheduled_and_keyed_items():
    q = chute.Queue()
    await q.put("plain")
    await q.put("keyed", key="k")
    await q.put("later", delay=60, key="l")
    await q.put_batch(["later 2", "later 3"], delay=60, priority=2)
    removed = q.shutdown(immediate=True)
    assert sorted(removed) == ["keyed", "later", "later 2", "later 3", "plain"]
    s = q.statistics()
    assert (s.size, s.scheduled, s.unfinished_tasks) == (0, 0, 0)
    assert s.total_got == 0
    await asyncio.wait_for(q.join(), 10)


async def test_a_reserved_item_keeps_its_key_through_a_delayed_nack():
    q = chute.Queue()
    assert await q.put("job", key="k") is True
    job = await q.reserve()
    job.nack(delay=DUE)
    assert q.put_nowait("dup", key="k") is False  # out on its delay
    job = await q.reserve(timeout=10)
    assert job.item == "job"
    job.ack()
    assert q.put_nowait("new", key="k") is True


async def test_a_keyed_putter_woken_for_room_after_its_key_was_taken_stores_nothing():
    q = chute.Queue(maxsize=1)
    await q.put("a")
    keyed = asyncio.create_task(q.put("x", key="k"))
    plain = asyncio.create_task(q.put("y"))
    await asyncio.sleep(0)
    assert q.statistics().putters_waiting == 2
    q.configure(maxsize=4)  # both are promised room, neither has run yet
    assert q.put_nowait("z", key="k") is True  # a newcomer takes the key first
    assert await asyncio.wait_for(keyed, 10) is False
    await asyncio.wait_for(plain, 10)
    assert await q.get_batch(4) == ["a", "z", "y"]


async def test_a_delayed_put_waits_for_room_and_then_holds_it():
    q = chute.Queue(maxsize=1)
    await q.put("a")
    later = asyncio.create_task(q.put("b", delay=60))
    await asyncio.sleep(0)
    assert not later.done()
    assert await q.get() == "a"
    await asyncio.wait_for(later, 10)
    assert (q.qsize(), q.full(), q.empty()) == (1, True, False)
    with pytest.raises(chute.QueueFull):
        q.put_nowait("c")
    with pytest.raises(chute.QueueEmpty):
        q.get_nowait()


def test_the_blocking_face_keeps_every_option():
    q = chute.Queue()
    assert q.sync.put("k1", key="k") is True
    assert q.sync.put("k2", key="k") is False
    assert q.sync.put_nowait("k3", key="k") is False
    q.sync.put("low", priority=9)
    q.sync.put("late", delay=DUE)
    q.sync.put_batch(["high"], priority=-9)
    assert q.sync.get() == "high"
    assert q.sync.get() == "k1"
    assert q.sync.get() == "low"
    assert q.sync.get(timeout=10) == "late"


def test_a_queue_left_with_a_delayed_item_is_not_kept_alive_by_it():
    q = chute.Queue()
    q.put_nowait("in a day", delay=86_400)
    ref = weakref.ref(q)
    del q
    gc.collect()
    assert ref() is None


async def test_a_given_back_item_the_heap_cannot_order_is_dead_lettered_not_lost():
    q = chute.PriorityQueue()
    assert q.put_nowait((1, {"a": 1}), key="k") is True
    job = await q.reserve()
    q.put_nowait((1, {"b": 2}))  # stored: the heap held nothing to compare it with
    job.nack()  # (1, {"a": 1}) cannot be ordered against (1, {"b": 2})
    [dead] = q.dead_letters()
    assert dead.item == (1, {"a": 1})
    assert dead.error_type == "TypeError"
    s = q.statistics()
    assert (s.size, s.in_flight, s.unfinished_tasks) == (1, 0, 1)
    assert q.put_nowait((2, "x"), key="k") is True  # its key is free


async def test_a_putter_whose_item_is_refused_passes_its_room_on():
    q = chute.PriorityQueue(maxsize=2)
    q.put_nowait((1, {"a": 1}))
    q.put_nowait((0, "x"))
    refused = asyncio.create_task(q.put((1, {"b": 2})))
    behind = asyncio.create_task(q.put((5, "ok")))
    await wait_until(lambda: q.statistics().putters_waiting == 2)
    assert await q.get() == (0, "x")  # room for one, promised to the first putter
    with pytest.raises(TypeError):
        await asyncio.wait_for(refused, 10)
    await asyncio.wait_for(behind, 10)  # the room went on to it
    assert q.qsize() == 2


async def test_put_nowait_with_options_sees_the_room_a_plain_one_sees():
    q = chute.Queue(maxsize=3)
    q.put_nowait("a")
    batch = asyncio.create_task(q.put_batch(["b1", "b2", "b3"]))  # cannot fit: waits
    await wait_until(lambda: q.statistics().putters_waiting == 1)
    assert q.put_nowait("k", key="k") is True  # as a plain put_nowait would
    q.sync.put("d", block=False, delay=60)
    with pytest.raises(chute.QueueFull):
        q.put_nowait("full", key="other")
    assert q.qsize() == 3
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch


async def test_peak_size_counts_scheduled_items():
    q = chute.Queue()
    await q.put_batch([1, 2, 3])
    await q.put("later", delay=60)
    await q.get()
    assert q.statistics().peak_size == 4


def test_a_delayed_nack_does_not_keep_its_queue_alive_after_it_came_back():
    q = chute.Queue()
    q.put_nowait("x")
    job = q.sync.reserve(block=False).__enter__()
    job.nack(delay=0.01)
    assert q.sync.get(timeout=10) == "x"  # it came back
    ref = weakref.ref(q)
    del q, job
    gc.collect()
    assert ref() is None
