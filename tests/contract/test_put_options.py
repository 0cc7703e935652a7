"""put(delay=), put(priority=) and put(key=): on every transport that
declares them, and refused (nothing stored) by every one that does not."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest

import chute
from chute._contract import MAX_KEY_LENGTH
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(60)

#: Seconds an item is delayed by where the test waits for it to come due.
DUE = 0.4


# -- delays ------------------------------------------------------------------------------


async def test_a_delayed_item_is_stored_at_once_and_taken_only_once_due(make_delaying_queue):
    q = await make_delaying_queue()
    put_at = time.time()
    await q.put("later", delay=DUE)
    await q.put("now")
    s = await q.astatistics()
    assert (s.size, s.scheduled, s.total_put) == (2, 1, 2)
    assert await q.get(timeout=10) == "now"
    with pytest.raises(chute.QueueEmpty):
        q.get_nowait()  # stored, but not due
    assert await q.get(timeout=10) == "later"  # a waiting get takes it once due
    assert time.time() - put_at >= DUE * 0.95  # clocks of one machine; never before
    s = await q.astatistics()
    assert (s.size, s.scheduled) == (0, 0)


async def test_items_coming_due_at_once_are_all_taken_by_getters_already_waiting(
    make_delaying_queue,
):
    # One getter looks, finds three items not yet due, and sleeps until
    # they are; three more get in line behind it without looking (nothing
    # has changed since its look). When the three come due, the first
    # takes one and passes its timer on; whoever takes the next must pass
    # it on again, or the third waits for ever with four getters asleep.
    q = await make_delaying_queue()
    await q.put_batch(["a", "b", "c"], delay=DUE)
    got: list[str] = []

    async def getter() -> None:
        got.append(await q.get())

    first = [asyncio.create_task(getter())]
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    rest = [asyncio.create_task(getter()) for _ in range(3)]
    await wait_until(lambda: q.statistics().getters_waiting == 4)
    await wait_until(lambda: len(got) == 3, timeout=15)
    assert sorted(got) == ["a", "b", "c"]
    for task in first + rest:
        task.cancel()
    await asyncio.gather(*first, *rest, return_exceptions=True)


async def test_a_delayed_item_counts_toward_the_bound(make_delaying_queue):
    q = await make_delaying_queue(maxsize=1)
    await q.put("later", delay=60)
    with pytest.raises(chute.QueueFull):
        q.put_nowait("no room")
    assert q.qsize() == 1
    assert q.full()


async def test_a_delayed_batch_and_the_blocking_face(make_delaying_queue):
    q = await make_delaying_queue()
    await q.put_batch([1, 2], delay=DUE)
    await asyncio.to_thread(q.sync.put, 3, delay=DUE)
    with pytest.raises(chute.QueueEmpty):
        q.get_nowait()
    got = await q.get_batch(3, timeout=10)
    while len(got) < 3:  # the third came due a moment after the first two
        got += await q.get_batch(3, timeout=10)
    assert got == [1, 2, 3]


@pytest.mark.parametrize(
    ("delay", "error"),
    [
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
async def test_a_wrong_delay_is_refused_and_nothing_stored(make_delaying_queue, delay, error):
    q = await make_delaying_queue()
    with pytest.raises(error, match="delay"):
        await q.put("x", delay=delay)
    with pytest.raises(error, match="delay"):
        await q.put_batch(["x"], delay=delay)
    s = await q.astatistics()
    assert (s.size, s.total_put) == (0, 0)


# -- priorities -------------------------------------------------------------------------


async def test_lower_priorities_first_and_equal_ones_in_arrival_order(make_prioritising_queue):
    q = await make_prioritising_queue()
    for item, priority in [("a", 1), ("b", 0), ("c", 1), ("d", -5), ("e", 0)]:
        await q.put(item, priority=priority)
    await q.put_batch(["f", "g"], priority=-5)
    assert await q.get_batch(3, timeout=10) == ["d", "f", "g"]
    assert [await q.get(timeout=10) for _ in range(4)] == ["b", "e", "a", "c"]


async def test_an_item_given_back_keeps_its_priority(make_prioritising_queue):
    q = await make_prioritising_queue()
    await q.put("urgent", priority=-1)
    await q.put("routine")
    job = await q.reserve(timeout=10)
    assert job.item == "urgent"
    await job.anack()
    assert await q.get(timeout=10) == "urgent"
    await q.put("urgent again", priority=-1)
    getter = asyncio.create_task(q.get_batch(1, timeout=10))
    await asyncio.sleep(0)
    if make_prioritising_queue.name == "memory":
        # A memory get takes a stored item in one step: nothing to undo.
        assert getter.done()
        assert await getter == ["urgent again"]
    else:
        # A plain get undone (cancelled as it returned) puts it back as it was.
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        assert await q.get(timeout=10) == "urgent again"
    assert await q.get(timeout=10) == "routine"


@pytest.mark.parametrize(
    ("priority", "error"),
    [
        (1.5, TypeError),
        ("1", TypeError),
        (True, TypeError),
        (False, TypeError),
        (0.0, TypeError),
        (2**40, ValueError),
    ],
)
async def test_a_wrong_priority_is_refused_and_nothing_stored(
    make_prioritising_queue, priority, error
):
    q = await make_prioritising_queue()
    with pytest.raises(error, match="priority"):
        await q.put("x", priority=priority)
    s = await q.astatistics()
    assert (s.size, s.total_put) == (0, 0)


# -- keys --------------------------------------------------------------------------------


async def test_a_key_in_the_queue_makes_a_second_put_store_nothing(make_keyed_queue):
    q = await make_keyed_queue()
    assert await q.put("invoice 42", key="invoice-42") is True
    assert await q.put("invoice 42 again", key="invoice-42") is False  # waiting
    assert await q.put("plain") is None  # no key: as ever
    job = await q.reserve(timeout=10)
    assert job.item == "invoice 42"
    assert q.put_nowait("in flight", key="invoice-42") is False  # out on a lease
    await job.aack()
    assert await q.put("invoice 42, once done", key="invoice-42") is True
    assert await q.get(timeout=10) == "plain"
    assert await q.get(timeout=10) == "invoice 42, once done"  # a plain get frees it too
    assert await asyncio.to_thread(q.sync.put, "again", key="invoice-42") is True
    s = await q.astatistics()
    assert (s.size, s.total_put) == (1, 4)


async def test_a_delayed_item_holds_its_key(make_keyed_delaying_queue):
    q = await make_keyed_delaying_queue()
    assert await q.put("tomorrow", key="report", delay=60) is True
    assert await q.put("today", key="report") is False


async def test_a_dead_lettered_item_frees_its_key(make_keyed_queue):
    q = await make_keyed_queue(max_deliveries=1)
    assert await q.put("doomed", key="k") is True
    job = await q.reserve(timeout=10)
    await job.anack()  # its last delivery: to the dead letters
    assert [d.item for d in q.dead_letters()] == ["doomed"]
    assert await q.put("next", key="k") is True


async def test_producers_racing_with_one_key_store_it_once(make_keyed_queue):
    q = await make_keyed_queue()
    start = threading.Barrier(4)

    def put_from_a_thread(n: int) -> list[bool]:
        start.wait(10)
        return [q.sync.put(f"thread {n}.{i}", key="once") for i in range(5)]

    tasks = [q.put(f"task {i}", key="once") for i in range(20)]
    threads = [asyncio.to_thread(put_from_a_thread, n) for n in range(4)]
    results: list[Any] = await asyncio.gather(*tasks, *threads)
    answers = results[:20] + [a for r in results[20:] for a in r]
    assert answers.count(True) == 1
    assert answers.count(False) == len(answers) - 1
    s = await q.astatistics()
    assert (s.size, s.total_put) == (1, 1)


@pytest.mark.parametrize(
    ("key", "error"),
    [("", ValueError), ("k" * (MAX_KEY_LENGTH + 1), ValueError), (42, TypeError)],
)
async def test_a_wrong_key_is_refused_and_nothing_stored(make_keyed_queue, key, error):
    q = await make_keyed_queue()
    with pytest.raises(error, match="key"):
        await q.put("x", key=key)
    s = await q.astatistics()
    assert (s.size, s.total_put) == (0, 0)


# -- what a transport does not keep ---------------------------------------------------------


async def test_an_option_a_transport_does_not_keep_is_refused_and_nothing_stored(
    make_unkept_option_queue,
):
    q = await make_unkept_option_queue()
    option = make_unkept_option_queue.option
    value = {"delay": 1.0, "priority": 1, "key": "k"}[option]
    with pytest.raises((TypeError, ValueError), match=option):
        await q.put("x", **{option: value})
    assert q.qsize() == 0
    q.put_nowait("plain")  # the queue is as it was
    assert await q.get() == "plain"


async def test_a_plain_get_undone_after_its_key_was_put_again_loses_nothing(
    make_keyed_stored_queue,
):
    # A plain get frees the key when it takes the item; undone (its caller
    # cancelled) after another put took the key, the item comes back all
    # the same, without the key (two items, one key: nothing lost).
    q = await make_keyed_stored_queue()
    assert await q.put("first", key="k") is True
    backend = q._backend
    claimed = await backend.run(backend.claim(1, lease=None))
    assert [r.data for r in claimed.records] == [b'"first"']
    # Made as the core makes it when the get is cancelled, then sent.
    give_back = backend.give_back(claimed.records, leased=False)
    second = await q.put("second", key="k")  # Redis: its entry still holds the key
    await backend.run(give_back)
    expected = ["first", "second"] if second else ["first"]
    assert sorted(await q.get_batch(10, timeout=10)) == expected
