"""The async forms of the synchronous calls (no round trip waited for on
the loop), ``closed``, and the capabilities the SQLite backend declares."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import chute
from chute._backends.sqlite import SqliteBackend
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(60)


def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/q.db"


async def test_aqsize_and_astatistics_answer_as_their_sync_forms(tmp_path):
    async with chute.open(url(tmp_path), "q", 5) as q:
        await q.put_batch([1, 2, 3])
        job = await q.reserve()
        assert await q.aqsize() == q.qsize() == 2
        stats = await q.astatistics()
        later = q.statistics()
        # The same, but for the age of the oldest ready item, which grows.
        assert stats.oldest_ready_age is not None
        assert later.oldest_ready_age is not None
        assert 0 <= stats.oldest_ready_age <= later.oldest_ready_age
        assert stats == dataclasses.replace(later, oldest_ready_age=stats.oldest_ready_age)
        assert (stats.size, stats.in_flight, stats.maxsize, stats.total_put) == (2, 1, 5, 3)
        await job.aack()


async def test_aack_and_anack_settle_with_an_outcome(tmp_path):
    async with chute.open(url(tmp_path), "q", max_deliveries=2) as q:
        await q.put_batch(["a", "b"])
        first = await q.reserve()
        await first.aack()
        assert (first.settled, first.outcome) == (True, "acked")
        with pytest.raises(chute.JobSettledError):
            await first.aack()
        second = await q.reserve()
        await second.anack(delay=0.01, error=RuntimeError("boom"))
        assert second.outcome == "retried"
        again = await q.reserve(timeout=5)
        assert (again.item, again.deliveries) == ("b", 2)
        await again.anack(error=RuntimeError("boom again"))
        assert again.outcome == "dead"
        [dead] = q.dead_letters()
        assert (dead.item, dead.reason, dead.error) == ("b", "failed", "boom again")
        assert (await q.astatistics()).unfinished_tasks == 0


async def test_closed_says_whether_the_queue_was_closed(tmp_path):
    q = await chute.open(url(tmp_path), "q")
    assert not q.closed
    await q.aclose()
    assert q.closed
    with pytest.raises(chute.ChuteError, match="closed"):
        await q.aqsize()


async def test_a_getter_waiting_when_the_queue_is_closed_wakes_and_says_so(tmp_path):
    q = await chute.open(url(tmp_path), "q")
    getter = asyncio.ensure_future(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    assert not getter.done()
    await q.aclose()
    with pytest.raises(chute.ChuteError, match="closed"):
        await asyncio.wait_for(getter, 5)


def test_the_backend_declares_what_it_can_do():
    caps = SqliteBackend.capabilities
    assert not caps.blocking_wait  # waits in this process, polls data_version for others
    assert caps.arrival_order_across_clients
    assert not caps.immediate_shutdown_removes
    assert caps.delays
