"""ProcessQueue's live settings and dead-letter records, across processes."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import threading
from typing import Any
from unittest import mock

import pytest

from chute._process import ProcessQueue


def put_and_report(q: ProcessQueue[Any], done: ProcessQueue[Any]) -> None:
    q.sync.put("from the child", timeout=30)
    done.sync.put("stored")


async def test_a_larger_maxsize_wakes_a_putter_in_another_process():
    ctx = mp.get_context("fork")
    with ProcessQueue(maxsize=1) as q, ProcessQueue() as done:
        await q.put("a")
        child = ctx.Process(target=put_and_report, args=(q, done))
        child.start()
        try:
            for _ in range(2000):
                if q.statistics().putters_waiting == 1:
                    break
                await asyncio.sleep(0.005)
            assert q.statistics().putters_waiting == 1
            q.maxsize = 2  # no get: only the new bound can let it in
            assert await done.get(timeout=30) == "stored"
        finally:
            child.join(30)
        assert (q.qsize(), q.full(), q.sync.maxsize) == (2, True, 2)


def read_settings(name: str, out: ProcessQueue[Any]) -> None:
    q = ProcessQueue.attach(name)
    out.sync.put((q.maxsize, q.unfinished_tasks))
    q.close()


async def test_configure_is_seen_by_every_process():
    ctx = mp.get_context("spawn")
    with ProcessQueue(maxsize=2) as q, ProcessQueue() as out:
        await q.put("x")
        q.configure(maxsize=7, max_deliveries=1)
        child = ctx.Process(target=read_settings, args=(q.name, out))
        child.start()
        assert await out.get(timeout=60) == (7, 1)
        child.join(30)
        job = await q.reserve(timeout=10)
        job.nack()
        assert job.outcome == "dead"


def test_bad_and_unrepresentable_settings_are_refused():
    with ProcessQueue(maxsize=3) as q:
        with pytest.raises(ValueError, match=r"2\*\*63 - 1"):
            q.maxsize = 1 << 63
        with pytest.raises(TypeError, match=r"^max_deliveries must be an int >= 1 or None"):
            q.configure(maxsize=5, max_deliveries="2")
        assert q.maxsize == 3
    with pytest.raises(ValueError, match=r"2\*\*63 - 1"):
        ProcessQueue(maxsize=1 << 64)


def test_a_blocked_batch_that_a_lowered_bound_can_never_fit_raises():
    with ProcessQueue(maxsize=3) as q:
        q.sync.put_batch([1, 2])
        errors: list[BaseException] = []

        def put_batch() -> None:
            try:
                q.sync.put_batch([3, 4], timeout=30)
            except ValueError as exc:
                errors.append(exc)

        thread = threading.Thread(target=put_batch)
        thread.start()
        for _ in range(2000):
            if q.statistics().putters_waiting == 1:
                break
            threading.Event().wait(0.005)
        q.maxsize = 1
        thread.join(30)
        assert [str(e) for e in errors] == ["a batch of 2 items can never fit a queue of maxsize 1"]


async def test_the_queue_and_its_one_sync_face_take_attributes_and_mocks():
    with ProcessQueue() as q:
        q.Empty = asyncio.QueueEmpty
        assert q.Empty is asyncio.QueueEmpty
        assert q.sync is q.sync
        q.sync.note = "kept"
        assert q.sync.note == "kept"
        with mock.patch.object(q.sync, "get", return_value="mocked"):
            assert q.sync.get() == "mocked"
        with mock.patch.object(q, "get", mock.AsyncMock(return_value="mocked")):
            assert await q.get() == "mocked"
        q.sync.put("real")
        assert q.sync.get(timeout=5) == "real"
        assert q.sync.is_shutdown is False


def fail_with(q: ProcessQueue[Any], done: ProcessQueue[Any]) -> None:
    with pytest.raises(LookupError), q.sync.reserve(timeout=30):
        raise LookupError("not found in the child")
    done.sync.put("failed")


@pytest.mark.parametrize("capacity", [4096, 1 << 20])
async def test_an_error_travels_with_its_item_to_another_process_and_the_dead_letters(capacity):
    ctx = mp.get_context("fork")
    with ProcessQueue(max_deliveries=2, capacity=capacity) as q, ProcessQueue() as done:
        await q.put_batch(["poison", "next"])
        child = ctx.Process(target=fail_with, args=(q, done))
        child.start()
        assert await done.get(timeout=30) == "failed"
        child.join(30)
        job = await q.reserve(timeout=10)
        assert (job.item, job.deliveries) == ("poison", 2)  # back in front
        job.nack()  # no error this time: the child's is kept
        assert job.outcome == "dead"
        [dead] = q.dead_letters()
        assert (dead.item, dead.deliveries, dead.reason) == ("poison", 2, "failed")
        assert (dead.error_type, dead.error) == ("LookupError", "not found in the child")
        if capacity > 4096:  # a small ring carries the error without its traceback
            assert "raise LookupError" in (dead.traceback or "")
        assert await q.get(timeout=5) == "next"
        assert [d.item for d in q.purge_dead()] == ["poison"]
        assert q.dead_letters() == []


async def test_items_given_back_with_errors_keep_their_order_round_the_ring():
    # Records carrying an error are larger than the item alone: given back
    # where the space before the head is smaller, they end at the ring's end
    # and every reader steps over the gap. Round and round the ring.
    with ProcessQueue(capacity=4096) as q:
        for rnd in range(200):
            await q.put_batch([rnd, "second", "third"])
            job = await q.reserve(timeout=5)
            job.nack(error=ValueError(rnd))
            job = await q.reserve(timeout=5)
            assert (job.item, job.deliveries) == (rnd, 2)
            job.nack(error=ValueError(rnd))
            if rnd % 2:
                assert await q.get_batch(3) == [rnd, "second", "third"]
            else:
                assert await q.get() == rnd
                assert q.sync.get_batch(2) == ["second", "third"]
        assert q.empty()
        s = q.statistics()
        assert (s.in_flight, s.size, s.total_put) == (0, 0, 600)


def delay_and_die(q: ProcessQueue[Any], done: ProcessQueue[Any]) -> None:
    job = q.sync.reserve(timeout=30).__enter__()
    job.nack(delay=600)
    done.sync.put(job.outcome)
    threading.Event().wait(60)  # until killed


async def test_delayed_items_are_counted_and_given_back_if_their_holder_dies():
    ctx = mp.get_context("fork")
    with ProcessQueue() as q, ProcessQueue() as done:
        await q.put("later")
        child = ctx.Process(target=delay_and_die, args=(q, done))
        child.start()
        assert await done.get(timeout=30) == "retried"
        s = q.statistics()
        assert (s.delayed, s.in_flight, s.size) == (1, 1, 0)
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        job = await q.reserve(timeout=10)  # recovered from the dead holder
        assert (job.item, job.deliveries) == ("later", 2)
        assert q.statistics().delayed == 0
        job.ack()


async def test_a_delayed_nack_comes_back_uncounted():
    with ProcessQueue(max_deliveries=3) as q:
        await q.put("x")
        job = await q.reserve()
        # Long enough that the look below always comes before the item does,
        # however loaded the machine (the reserve below waits for it anyway).
        job.nack(delay=0.2, error=OSError("disk"))
        assert q.statistics().delayed == 1
        again = await q.reserve(timeout=10)
        assert q.statistics().delayed == 0
        assert again.deliveries == 2
        again.nack(delay=0.01)
        last = await q.reserve(timeout=10)
        last.nack(delay=60)  # its last try: dead at once, no wait
        assert last.outcome == "dead"
        [dead] = q.dead_letters()
        assert (dead.deliveries, dead.error_type, dead.error) == (3, "OSError", "disk")
        assert q.statistics().delayed == 0
