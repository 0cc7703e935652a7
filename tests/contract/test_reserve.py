"""reserve(): at-least-once delivery with the same shape on every transport."""

from __future__ import annotations

import asyncio
import time

import pytest

import chute
from tests.conftest import wait_until


async def test_clean_exit_acknowledges(make_reserving_queue):
    q = await make_reserving_queue()
    await q.put("job")
    async with q.reserve() as job:
        assert (job.item, job.deliveries, job.settled) == ("job", 1, False)
        assert q.statistics().in_flight == 1
    assert job.settled
    assert q.empty()
    s = q.statistics()
    assert (s.in_flight, s.unfinished_tasks) == (0, 0)
    await asyncio.wait_for(q.join(), 10)


async def test_exception_gives_the_item_back_in_front(make_reserving_queue):
    q = await make_reserving_queue()
    await q.put_batch(["first", "second"])
    with pytest.raises(RuntimeError):
        async with q.reserve() as job:
            assert job.item == "first"
            raise RuntimeError("handler failed")
    assert q.qsize() == 2
    async with q.reserve() as again:
        assert (again.item, again.deliveries) == ("first", 2)
    assert await q.get() == "second"


async def test_cancelled_inside_gives_the_item_back(make_reserving_queue):
    q = await make_reserving_queue()
    await q.put("job")
    entered = asyncio.Event()

    async def consumer():
        async with q.reserve():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(consumer())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert q.get_nowait() == "job"


async def test_reserve_waits_and_times_out(make_reserving_queue):
    q = await make_reserving_queue()
    with pytest.raises(TimeoutError):
        async with q.reserve(timeout=0.01):
            pytest.fail("nothing to reserve")
    waiter = asyncio.create_task(q.reserve(timeout=10).__aenter__())
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    await q.put("late")
    job = await asyncio.wait_for(waiter, 10)
    assert job.item == "late"
    job.ack()


async def test_manual_ack_and_nack(make_reserving_queue):
    q = await make_reserving_queue()
    await q.put("x")
    job = await q.reserve()
    job.nack()
    with pytest.raises(chute.JobSettledError):
        job.ack()
    job = await q.reserve()
    assert job.deliveries == 2
    job.ack()
    with pytest.raises(chute.JobSettledError):
        job.nack()
    assert q.statistics().unfinished_tasks == 0


async def test_nack_with_delay_returns_later(make_reserving_queue):
    q = await make_reserving_queue()
    await q.put("retry me")
    job = await q.reserve()
    job.nack(delay=0.05)
    assert job.outcome == "retried"
    assert q.empty()
    assert q.statistics().in_flight == 1
    again = await q.reserve(timeout=10)
    assert (again.item, again.deliveries) == ("retry me", 2)
    again.ack()


async def test_a_delayed_item_is_counted_in_flight_and_delayed(make_reserving_queue):
    q = await make_reserving_queue(maxsize=2)
    await q.put_batch(["later", "now"])
    job = await q.reserve()
    job.nack(delay=60)
    s = q.statistics()
    assert (s.size, s.in_flight, s.delayed) == (1, 1, 1)
    assert q.qsize() == 1
    assert not q.full()  # as an item in hand, a delayed one takes no room
    q.put_nowait("third")
    assert q.full()
    assert sorted([await q.get(), await q.get()]) == ["now", "third"]
    s = q.statistics()
    assert (s.size, s.in_flight, s.delayed) == (0, 1, 1)
    assert q.unfinished_tasks == 3  # the delayed item is not done yet


async def test_dead_letters_after_max_deliveries(make_dead_letter_queue):
    q = await make_dead_letter_queue(max_deliveries=2)
    await q.put("poison")
    before = time.time()
    outcomes = []
    for _ in range(2):
        with pytest.raises(ValueError):
            async with q.reserve() as job:
                raise ValueError("cannot handle")
        outcomes.append(job.outcome)
    assert outcomes == ["retried", "dead"]
    assert q.empty()
    assert q.statistics().dead_lettered == 1
    [dead] = q.dead_letters()
    assert isinstance(dead, chute.DeadLetter)
    assert (dead.item, dead.deliveries, dead.reason) == ("poison", 2, "failed")
    assert (dead.error_type, dead.error) == ("ValueError", "cannot handle")
    assert dead.traceback is not None
    assert 'raise ValueError("cannot handle")' in dead.traceback
    assert before - 1 <= dead.died_at <= time.time() + 1
    await asyncio.wait_for(q.join(), 10)  # a dead letter is settled
    assert q.requeue_dead() == 1
    assert q.dead_letters() == []
    async with q.reserve() as job:
        assert job.item == "poison"
    assert job.outcome == "acked"
    assert q.purge_dead() == []


async def test_a_dead_letter_keeps_the_error_of_its_last_failure(make_dead_letter_queue):
    q = await make_dead_letter_queue(max_deliveries=3)
    await q.put("flaky")
    for exc in (KeyError("first"), RuntimeError("second")):
        job = await q.reserve(timeout=10)
        job.nack(error=exc)
        assert job.outcome == "retried"
    job = await q.reserve(timeout=10)
    job.nack()  # the last try gives no error: the last one given is kept
    assert job.outcome == "dead"
    [dead] = q.purge_dead()
    assert (dead.item, dead.deliveries) == ("flaky", 3)
    assert (dead.error_type, dead.error) == ("RuntimeError", "second")
    assert q.dead_letters() == []
    assert q.statistics().size == 0


async def test_a_bare_nack_dead_letter_has_no_error(make_dead_letter_queue):
    q = await make_dead_letter_queue(max_deliveries=1)
    await q.put({"id": 7})
    job = await q.reserve(timeout=10)
    job.nack()
    [dead] = q.dead_letters()
    assert dead.item == {"id": 7}
    assert (dead.error_type, dead.error, dead.traceback) == (None, None, None)
    assert dead.to_dict()["item"] == {"id": 7}


async def test_item_given_back_after_shutdown_is_not_lost(make_reserving_queue):
    q = await make_reserving_queue()
    await q.put("x")
    job = await q.reserve()
    q.shutdown()
    job.nack()
    assert await q.get() == "x"  # drained before gets raise
    with pytest.raises(chute.QueueShutDown):
        await q.get()


async def test_given_back_after_immediate_shutdown_goes_to_the_dead_letters(make_dead_letter_queue):
    q = await make_dead_letter_queue()
    await q.put("job")
    job = await q.reserve()
    assert q.shutdown(immediate=True) == []
    job.nack()  # nowhere to go back to: collected, not stranded
    assert [d.item for d in q.dead_letters()] == ["job"]
    await asyncio.wait_for(q.join(), 10)  # and join() does not hang


async def test_settling_after_task_done_is_refused_with_the_queue_unchanged(make_dead_letter_queue):
    q = await make_dead_letter_queue(max_deliveries=1)
    await q.put_batch(["a", "b"])
    ja = await q.reserve()
    jb = await q.reserve()
    q.task_done()
    q.task_done()  # the caller marked both done already
    with pytest.raises(ValueError, match="task_done"):
        ja.ack()
    with pytest.raises(ValueError, match="task_done"):
        jb.nack()
    s = q.statistics()
    assert (s.in_flight, s.dead_lettered, ja.settled, jb.settled) == (2, 0, False, False)


@pytest.mark.parametrize("delay", [float("inf"), float("nan"), -1])
async def test_bad_nack_delay_is_refused(make_reserving_queue, delay):
    q = await make_reserving_queue()
    await q.put("x")
    job = await q.reserve()
    with pytest.raises(ValueError, match=r"delay|timeout"):
        job.nack(delay=delay)
    assert not job.settled
    job.nack()
    assert q.qsize() == 1
