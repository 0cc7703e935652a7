"""What a stored queue shows a dashboard: its dead letters a page at a time,
requeued or purged by id, and how long its oldest ready item has waited;
the same on every transport that keeps its items in a store."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

import chute
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(60)

#: Seconds let pass where a test shows that an age counts from a moment.
GAP = 0.2
#: Seconds a delayed item waits before it is due.
DUE = 0.6
#: Seconds an age may read above this process's clock: Redis counts an
#: item's age from its stream id, in whole milliseconds.
TICK = 0.001


async def _dead(q: Any, items: list[Any]) -> list[chute.DeadLetter[Any]]:
    """``items`` put and failed on their only delivery (the queue has
    ``max_deliveries=1``): its dead letters, oldest first."""
    await q.put_batch(items)
    for _ in items:
        job = await q.reserve(timeout=10)
        await job.anack()
        assert job.outcome == "dead"
    return await q.adead_letters()


# -- dead letters, a page at a time ---------------------------------------------------


async def test_dead_letters_by_page_with_stable_ids(make_stored_queue):
    q = await make_stored_queue(max_deliveries=1)
    every = await _dead(q, list(range(10)))
    assert [d.item for d in every] == list(range(10))
    ids = [d.id for d in every]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == 10
    assert q.dead_letters() == every  # the same ids at every look
    assert q.statistics().dead_lettered == 10

    def items(page: list[chute.DeadLetter[Any]]) -> list[Any]:
        return [d.item for d in page]

    assert q.dead_letters(3) == every[:3]  # the first page
    assert q.dead_letters(3, 3) == every[3:6]  # one in the middle
    assert q.dead_letters(3, 9) == every[9:]  # the last, short
    assert q.dead_letters(3, 10) == []  # past the end
    assert q.dead_letters(None, 4) == every[4:]
    assert q.dead_letters(0) == []
    assert items(q.dead_letters(3, newest_first=True)) == [9, 8, 7]
    assert items(q.dead_letters(3, 8, newest_first=True)) == [1, 0]
    assert q.dead_letters(newest_first=True) == every[::-1]
    assert await q.adead_letters(4, 2, newest_first=True) == every[::-1][2:6]
    assert every[0].to_dict()["id"] == ids[0]


@pytest.mark.parametrize(
    ("args", "error"),
    [((-1,), ValueError), ((1, -1), ValueError), (("3",), TypeError), ((True,), TypeError)],
)
async def test_a_wrong_page_is_refused(make_stored_queue, args, error):
    q = await make_stored_queue()
    with pytest.raises(error):
        q.dead_letters(*args)
    with pytest.raises(error):
        await q.adead_letters(*args)


# -- requeue and purge by id ----------------------------------------------------------


async def test_requeue_by_ids_moves_only_those_and_passes_over_vanished_ones(make_stored_queue):
    q = await make_stored_queue(max_deliveries=1)
    a, b, c, d, e = await _dead(q, ["a", "b", "c", "d", "e"])
    assert q.requeue_dead([d.id, b.id, d.id]) == 2  # in the order they died; a repeat once
    assert await q.adead_letters() == [a, c, e]
    s = await q.astatistics()
    assert (s.dead_lettered, s.size, s.unfinished_tasks) == (3, 2, 2)
    assert await q.get_batch(5, timeout=10) == ["b", "d"]
    [gone] = q.purge_dead([c.id])
    assert gone == c
    assert await q.arequeue_dead([c.id, e.id]) == 1  # c is gone: passed over
    assert q.dead_letters() == [a]
    job = await q.reserve(timeout=10)
    assert (job.item, job.deliveries) == ("e", 1)  # tried afresh
    await job.aack()
    s = await q.astatistics()
    assert (s.dead_lettered, s.size, s.unfinished_tasks) == (1, 0, 2)  # b, d: got, not done
    assert q.requeue_dead([]) == 0
    assert q.requeue_dead() == 1  # the rest, as before
    assert await q.get(timeout=10) == "a"


async def test_requeue_by_id_wakes_a_waiting_getter(make_stored_queue):
    q = await make_stored_queue(max_deliveries=1)
    _, second = await _dead(q, ["first", "second"])
    getter = asyncio.create_task(q.get(timeout=30))
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    assert await q.arequeue_dead([second.id]) == 1
    assert await asyncio.wait_for(getter, 10) == "second"
    assert [d.item for d in q.dead_letters()] == ["first"]


async def test_purge_by_ids_removes_only_those(make_stored_queue):
    q = await make_stored_queue(max_deliveries=1)
    a, b, c, d = await _dead(q, ["a", "b", "c", "d"])
    assert await q.apurge_dead([d.id, b.id]) == [b, d]  # oldest first, with their ids
    assert q.dead_letters() == [a, c]
    assert q.statistics().dead_lettered == 2
    assert q.purge_dead([b.id]) == []  # gone already
    assert q.purge_dead([]) == []
    assert q.purge_dead() == [a, c]
    assert q.statistics().dead_lettered == 0


@pytest.mark.parametrize("bad", ["", "abc", "1.5", "-1", " 1", "01", "1-0-0", "9" * 30])
async def test_a_malformed_id_is_refused_and_nothing_changes(make_stored_queue, bad):
    q = await make_stored_queue(max_deliveries=1)
    a, b = await _dead(q, ["a", "b"])
    before = await q.astatistics()
    for call in (q.requeue_dead, q.purge_dead):
        with pytest.raises(ValueError, match="dead letter id"):
            call([a.id, bad])
    for acall in (q.arequeue_dead, q.apurge_dead):
        with pytest.raises(ValueError, match="dead letter id"):
            await acall([bad, b.id])
    with pytest.raises(TypeError):
        q.requeue_dead(a.id)  # one id is not an iterable of ids
    with pytest.raises(TypeError):
        q.purge_dead([1])
    assert q.dead_letters() == [a, b]
    after = await q.astatistics()
    assert (after.dead_lettered, after.size, after.unfinished_tasks) == (
        before.dead_lettered,
        before.size,
        before.unfinished_tasks,
    )


async def test_requeue_after_shutdown_is_refused_and_nothing_moves(make_stored_queue):
    q = await make_stored_queue(max_deliveries=1)
    a, b = await _dead(q, ["a", "b"])
    q.shutdown()
    with pytest.raises(chute.QueueShutDown):
        q.requeue_dead([b.id])
    with pytest.raises(chute.QueueShutDown):
        await q.arequeue_dead()
    assert q.dead_letters() == [a, b]
    s = await q.astatistics()
    assert (s.dead_lettered, s.size) == (2, 0)
    q.reopen()
    assert q.requeue_dead([b.id]) == 1
    assert await q.get(timeout=10) == "b"


# -- the age of the oldest ready item -------------------------------------------------


async def test_the_oldest_ready_age_is_none_when_nothing_is_ready(make_stored_queue):
    q = await make_stored_queue()
    assert (await q.astatistics()).oldest_ready_age is None
    await q.put("x")
    job = await q.reserve(timeout=10)
    s = await q.astatistics()
    assert (s.size, s.in_flight, s.oldest_ready_age) == (0, 1, None)  # out on a lease
    await job.aack()
    assert q.statistics().oldest_ready_age is None


async def test_the_oldest_ready_age_follows_the_oldest_item(make_stored_queue):
    q = await make_stored_queue()
    before_a = time.time()
    await q.put("a")
    after_a = time.time()
    first = (await q.astatistics()).oldest_ready_age
    assert first is not None
    assert 0 <= first <= time.time() - before_a + TICK
    await asyncio.sleep(GAP)  # time passes: the age grows with it
    before_b = time.time()
    await q.put("b")  # a later item does not change it
    s = await q.astatistics()
    assert s.oldest_ready_age is not None
    assert before_b - after_a - TICK <= s.oldest_ready_age <= time.time() - before_a + TICK
    assert await q.get(timeout=10) == "a"
    s = await q.astatistics()  # now b's
    assert s.oldest_ready_age is not None
    assert 0 <= s.oldest_ready_age <= time.time() - before_b + TICK


async def test_a_nacked_item_keeps_its_age(make_stored_queue):
    q = await make_stored_queue()
    await q.put("again")
    await asyncio.sleep(GAP)  # then it is tried, and given back
    job = await q.reserve(timeout=10)
    await job.anack()
    s = await q.astatistics()
    assert s.size == 1
    assert s.oldest_ready_age is not None
    assert s.oldest_ready_age >= GAP  # from its put, not from the nack


async def test_a_delayed_item_counts_only_once_due(make_stored_queue):
    q = await make_stored_queue()
    await q.put("never", delay=3600)
    s = await q.astatistics()
    assert (s.size, s.scheduled, s.oldest_ready_age) == (1, 1, None)  # stored, not ready
    await q.put("first")
    put_later = time.time()
    await q.put("later", delay=DUE)
    await asyncio.sleep(DUE + GAP)  # "later" comes due meanwhile
    assert await q.get(timeout=10) == "first"
    s = await q.astatistics()
    assert (s.size, s.scheduled) == (2, 1)
    assert s.oldest_ready_age is not None
    # Counted from when it came due (Redis: from when the get moved it into
    # the stream, a moment later), never from its put.
    assert 0 <= s.oldest_ready_age < time.time() - put_later - DUE + 0.05
    assert await q.get(timeout=10) == "later"
    assert (await q.astatistics()).oldest_ready_age is None


async def test_statistics_of_the_async_and_blocking_faces_agree(make_stored_queue):
    q = await make_stored_queue()
    await q.put_batch([1, 2])
    a = await q.astatistics()
    b = await asyncio.to_thread(q.sync.statistics)
    assert a.oldest_ready_age is not None
    assert b.oldest_ready_age is not None
    assert a.oldest_ready_age <= b.oldest_ready_age
    assert dataclasses.replace(a, oldest_ready_age=None) == dataclasses.replace(
        b, oldest_ready_age=None
    )


async def test_a_page_far_past_the_end_is_empty(make_stored_queue):
    q = await make_stored_queue(max_deliveries=1)
    [dead] = await _dead(q, ["only"])
    assert q.dead_letters(1, 2**62) == []
    assert q.dead_letters(None, 2**70, newest_first=True) == []
    assert q.dead_letters(2**70) == [dead]
