"""A queue's settings as code written for the stdlib uses them, and as the
queue keeps them: ``maxsize`` assigned on a live queue, ``configure()``,
``unfinished_tasks``, ``is_shutdown``, and arguments worded the same way on
every transport."""

from __future__ import annotations

import asyncio
import threading
from unittest import mock

import pytest

import chute
from tests.conftest import wait_until


async def _wait_for_putter(q) -> None:
    await wait_until(lambda: q.statistics().putters_waiting == 1)


async def test_a_larger_maxsize_wakes_a_waiting_putter(make_queue):
    q = await make_queue(maxsize=1)
    await q.put("a")
    putter = asyncio.create_task(q.put("b"))
    await _wait_for_putter(q)
    assert not putter.done()
    q.maxsize = 2
    await asyncio.wait_for(putter, 10)
    assert q.maxsize == 2
    assert q.qsize() == 2
    assert q.full()


async def test_maxsize_assigned_on_the_sync_face_is_the_queues(make_queue):
    q = await make_queue(maxsize=1)
    q.sync.maxsize = 3
    assert (q.maxsize, q.sync.maxsize) == (3, 3)
    await q.put_batch([1, 2, 3])
    assert q.full()
    with pytest.raises(chute.QueueFull):
        q.put_nowait(4)


async def test_a_smaller_maxsize_keeps_the_items(make_queue):
    q = await make_queue()
    await q.put_batch(["a", "b", "c"])
    q.maxsize = 1
    assert q.qsize() == 3
    assert q.full()
    with pytest.raises(chute.QueueFull):
        q.put_nowait("d")
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]
    q.put_nowait("d")  # room again once drained below the bound
    assert q.full()


async def test_configure_changes_what_is_passed_and_nothing_else(make_queue):
    q = await make_queue(maxsize=2)
    q.configure()
    assert q.maxsize == 2
    q.configure(maxsize=0)
    assert q.maxsize == 0
    assert not q.full()


async def test_configure_max_deliveries(make_dead_letter_queue):
    q = await make_dead_letter_queue(maxsize=4)
    q.configure(max_deliveries=1)
    assert q.maxsize == 4  # untouched
    await q.put("once")
    job = await q.reserve(timeout=10)
    job.nack()
    assert job.outcome == "dead"
    q.configure(max_deliveries=None)  # no limit any more
    assert q.requeue_dead() == 1
    for _ in range(3):
        job = await q.reserve(timeout=10)
        job.nack()
        assert job.outcome == "retried"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"maxsize": -1}, ValueError),
        ({"maxsize": "3"}, TypeError),
        ({"maxsize": True}, TypeError),
        ({"max_deliveries": 0}, ValueError),
        ({"max_deliveries": "3"}, TypeError),
        ({"max_deliveries": 2.5}, TypeError),
    ],
)
async def test_configure_refuses_bad_values_and_changes_nothing(
    make_dead_letter_queue, options, error
):
    q = await make_dead_letter_queue(maxsize=3, max_deliveries=2)
    with pytest.raises(error):
        q.configure(**options)
    if "maxsize" in options:
        with pytest.raises(error):
            q.maxsize = options["maxsize"]
    assert q.maxsize == 3
    await q.put("x")
    for expected in ("retried", "dead"):
        job = await q.reserve(timeout=10)
        job.nack()
        assert job.outcome == expected


@pytest.mark.parametrize("value", ["3", 2.5, True])
async def test_max_deliveries_of_the_wrong_type_is_one_error_everywhere(
    make_dead_letter_queue, value
):
    with pytest.raises(
        TypeError, match=r"^max_deliveries must be an int >= 1 or None \(no limit\)"
    ):
        await make_dead_letter_queue(max_deliveries=value)


async def test_unfinished_tasks_as_on_queue_queue(make_queue):
    q = await make_queue()
    assert (q.unfinished_tasks, q.sync.unfinished_tasks) == (0, 0)
    await q.put_batch(["a", "b"])
    assert q.unfinished_tasks == 2
    await q.get()
    assert q.unfinished_tasks == 2  # got, not yet done
    q.task_done()
    assert (q.unfinished_tasks, q.sync.unfinished_tasks) == (1, 1)


async def test_is_shutdown_is_a_property(make_queue):
    q = await make_queue()
    assert q.is_shutdown is False
    q.shutdown()
    assert q.is_shutdown is True


async def test_a_negative_timeout_is_worded_as_the_stdlib_words_it(make_queue):
    q = await make_queue()
    stdlib = "'timeout' must be a non-negative number"
    with pytest.raises(ValueError, match=f"^{stdlib}"):
        await q.get(timeout=-1)
    with pytest.raises(ValueError, match=f"^{stdlib}"):
        await q.put("x", timeout=-0.5)
    with pytest.raises(ValueError, match=f"^{stdlib}"):
        q.sync.get(timeout=-1)
    assert q.empty()


async def test_a_queue_takes_attributes_and_mocks_as_the_stdlibs_do(make_queue):
    q = await make_queue()
    q.Empty = asyncio.QueueEmpty  # as python-engineio's tests do
    assert q.Empty is asyncio.QueueEmpty
    with mock.patch.object(q, "get", mock.AsyncMock(return_value="mocked")):
        assert await q.get() == "mocked"
    await q.put("real")
    assert await q.get() == "real"
    q.sync.note = "a face takes one too"
    assert q.sync.note == "a face takes one too"


@pytest.mark.sync_only
def test_the_sync_face_of_a_memory_queue_wakes_a_putter_blocked_in_a_thread():
    q = chute.Queue[int](1)
    q.sync.put(1)
    done = threading.Event()

    def put() -> None:
        q.sync.put(2, timeout=10)
        done.set()

    t = threading.Thread(target=put)
    t.start()
    try:
        while q.statistics().putters_waiting != 1:
            threading.Event().wait(0.001)
        q.sync.maxsize = 0
        assert done.wait(10)
    finally:
        t.join(10)
    assert q.qsize() == 2
