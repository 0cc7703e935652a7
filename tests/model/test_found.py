"""What the model found: each divergence from the contract as a plain test.

Marked ``xfail(strict=True)`` until the transport is fixed; a fix makes the
test pass, which fails the run as a reminder to remove the mark here and
the matching entry in test_model.py's ``Capabilities``.
"""

from __future__ import annotations

import asyncio

import pytest

import chute

from .test_model import _close, _open

DURABLE = ["sqlite", "redis"]
IN_PROCESS = ["memory", "process"]


@pytest.mark.xfail(
    strict=True,
    reason="put_batch([]) after shutdown() returns instead of raising QueueShutDown "
    "(memory and process raise it)",
)
@pytest.mark.parametrize("kind", DURABLE)
async def test_an_empty_batch_after_shutdown_is_refused(kind):
    q = await _open(kind, 0, None)
    try:
        q.shutdown()
        with pytest.raises(chute.QueueShutDown):
            await q.put_batch([])
    finally:
        await _close(q)


@pytest.mark.xfail(
    strict=True,
    reason="join() returns after shutdown(immediate=True) while a reserved job is still "
    "in hand and unfinished_tasks says 1 (memory and process wait for it; the model's "
    "join_ends_at_immediate_shutdown)",
)
@pytest.mark.parametrize("kind", DURABLE)
async def test_join_waits_for_a_job_in_hand_after_an_immediate_shutdown(kind):
    q = await _open(kind, 0, None)
    try:
        await q.put("x")
        job = await q.reserve(timeout=10)
        q.shutdown(immediate=True)
        assert q.unfinished_tasks == 1
        joiner = asyncio.ensure_future(q.join())
        # Longer than a thread hop or a round trip: a join that is going to
        # return wrongly has returned by then.
        done, _ = await asyncio.wait([joiner], timeout=0.2)
        assert not done, "join() returned with a job still in hand"
        job.ack()
        await asyncio.wait_for(joiner, 10)
    finally:
        await _close(q)


@pytest.mark.xfail(
    strict=True,
    reason="put_batch([]) waits for room while the queue holds more items than maxsize "
    "(after maxsize was lowered, or items were given back over the bound): an empty "
    "batch needs none (SQLite and Redis return at once)",
)
@pytest.mark.parametrize("kind", IN_PROCESS)
async def test_an_empty_batch_needs_no_room(kind):
    q = await _open(kind, 0, None)
    try:
        await q.put_batch([1, 2, 3])
        q.maxsize = 2  # keeps the three items: one over the bound
        await q.put_batch([], timeout=1)
        assert q.qsize() == 3
    finally:
        await _close(q)
