"""The PostgreSQL transport's group commit: the durable calls (puts and
settles) that callers of one event loop make at the same time go to the
server in one statement, one transaction and one WAL flush; a refusal of
one of them leaves the others their own answers; and getters elsewhere are
woken for every item, although PostgreSQL delivers a transaction's
identical notifications once."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import chute
from chute._backends import postgres_link
from chute._backends.postgres import PostgresBackend
from chute._durable.waiting import Wait
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The function each call of every group statement sent calls, in order."""
    sent: list[list[str]] = []
    real = postgres_link._grouped_sql

    def spy(parts: list[Any]) -> str:
        sent.append([part.target.rpartition(".")[2] for part in parts])
        return real(parts)

    monkeypatch.setattr(postgres_link, "_grouped_sql", spy)
    return sent


async def test_acks_and_a_put_made_at_once_share_one_statement(url, name, groups):
    async with chute.open(url, name) as q:
        for i in range(3):
            await q.put(i)
        jobs = [await q.reserve(timeout=10) for _ in range(3)]
        await asyncio.gather(*(job.aack() for job in jobs), q.put("next"))
        # The acks first: a bounded put in the same group sees the room they made.
        assert groups == [["chute_settle"] * 3 + ["chute_put"]]
        assert [job.outcome for job in jobs] == ["acked"] * 3
        s = await q.astatistics()
        assert (s.size, s.in_flight, s.unfinished_tasks, s.total_put) == (1, 0, 1, 4)
        assert await q.get() == "next"


async def test_a_call_refused_in_a_group_leaves_the_others_their_answers(url, name, groups):
    async with (
        chute.open(url, name, visibility_timeout=0.3) as a,
        chute.open(url, name, visibility_timeout=30) as b,
    ):
        await a.put("job")
        first = await a.reserve(timeout=10)
        second = await b.reserve(timeout=10)  # once the first lease ran out
        late, acked, put = await asyncio.gather(
            first.aack(), second.aack(), a.put("more"), return_exceptions=True
        )
        assert groups == [["chute_settle", "chute_settle", "chute_put"]]
        assert isinstance(late, chute.ChuteError)
        assert "lease ran out" in str(late)
        assert (acked, put, second.outcome) == (None, None, "acked")
        s = await b.astatistics()
        assert (s.size, s.in_flight, s.unfinished_tasks, s.total_put) == (1, 0, 1, 2)
        assert await b.get() == "more"


async def test_a_bounded_queue_keeps_its_bound_when_puts_share_a_group(url, name, groups):
    async with (
        chute.open(url, name, maxsize=2) as q,
        chute.open(url, name + "-other") as other,
    ):
        await q.put("a")
        await q.put("b")
        job = await q.reserve(timeout=10)
        # The ack makes room for one: the put sent with it takes it.
        await asyncio.gather(job.aack(), q.put("c", timeout=10), other.put("x"))
        assert groups == [["chute_settle", "chute_put", "chute_put"]]
        with pytest.raises(TimeoutError):
            await q.put("d", timeout=0.2)
        assert (await q.aqsize(), await other.aqsize()) == (2, 1)


async def test_getters_elsewhere_are_woken_for_each_of_puts_made_at_once(
    url, name, groups, monkeypatch
):
    # No idle look: only notifications wake the getters of the other client.
    # Two puts of one item in one transaction would send two identical
    # notifications, delivered once: one getter would sleep on an item.
    monkeypatch.setattr(PostgresBackend, "idle_poll_interval", None)
    async with (
        chute.open(url, name) as puts,
        # Another URL spelling: another client (a store of its own), as another process.
        chute.open("postgres://" + url.removeprefix("postgresql://"), name) as waits,
    ):
        getters = [asyncio.create_task(waits.get(timeout=30)) for _ in range(2)]
        backend = waits._backend
        await wait_until(
            lambda: backend.hub.waiting(Wait.GET) == 2 and backend._id in backend._store.registered
        )
        await asyncio.sleep(0.1)  # their last look (after registering) done: asleep
        await asyncio.gather(puts.put(1), puts.put(2))
        assert all("chute_put" not in g or g.count("chute_put") == 1 for g in groups)
        got = await asyncio.wait_for(asyncio.gather(*getters), 10)
        assert sorted(got) == [1, 2]


def test_threads_putting_at_once_through_the_blocking_face_lose_nothing(url, name):
    # Their calls run on the store's own loop, where they are grouped too.
    with chute.open(url, name) as q:
        barrier = threading.Barrier(4)

        def produce(k: int) -> None:
            barrier.wait()
            for i in range(25):
                q.sync.put(k * 100 + i)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        got = [q.sync.get(timeout=10) for _ in range(100)]
        assert sorted(got) == sorted(k * 100 + i for k in range(4) for i in range(25))
        for k in range(4):  # each producer's items in the order it put them
            mine = [v for v in got if v // 100 == k]
            assert mine == sorted(mine)
        assert q.qsize() == 0
