"""What the model found: each divergence from the contract as a plain test.

Each was marked ``xfail(strict=True)`` until its transport was fixed (a
fix made the test pass, which failed the run as a reminder to remove the
mark here and the matching entry in test_model.py's ``KNOWN_BUGS``); all
three are fixed now, and stay as regression tests.
"""

from __future__ import annotations

import asyncio

import pytest

import chute

from .test_model import _close, _open

DURABLE = ["sqlite", "redis", "postgres"]
IN_PROCESS = ["memory", "process"]


@pytest.mark.parametrize("kind", DURABLE)
async def test_an_empty_batch_after_shutdown_is_refused(kind):
    q = await _open(kind, 0, None)
    try:
        q.shutdown()
        with pytest.raises(chute.QueueShutDown):
            await q.put_batch([])
    finally:
        await _close(q)


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
