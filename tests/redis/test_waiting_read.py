"""The Redis backend's wait on the server: a claim that finds nothing sends
the blocked read with it (the caller's wait then costs no round trip of its
own), and the read's count travels behind it in the same packet.

What these hold: a read left in flight by a get that did not wait after
all takes nothing meant for the next call; each read's consumer and bell
are deleted once it ends; the counters and fencing are as before."""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest
import redis

import chute
from tests.redis_server import RedisServer, shared_server

pytestmark = pytest.mark.timeout(60)

_names = itertools.count()


@pytest.fixture
def server() -> RedisServer:
    return shared_server()


@pytest.fixture
def name() -> str:
    return f"w-{os.getpid()}-{next(_names)}"


def _consumers_and_bells(url: str, name: str) -> tuple[int, list[bytes]]:
    r = redis.Redis.from_url(url)
    try:
        consumers = r.xinfo_consumers(f"chute:{{{name}}}:items", "chute")
        bells = list(r.scan_iter(match=f"chute:{{{name}}}:bell:*"))
        return len(consumers), bells
    finally:
        r.close()


async def test_a_get_that_timed_out_leaves_no_read_to_take_the_next_put(server, name):
    async with chute.open(server.url, name) as q:
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await q.get(timeout=0)
            await q.put("next")  # the read that get left must not take it
            assert await q.get(timeout=0) == "next"
        with pytest.raises(TimeoutError):
            await q.get(timeout=0)
        q.put_nowait("sync")  # the blocking face too, on the loop's thread
        assert q.get_nowait() == "sync"
        stats = await q.astatistics()
        assert (stats.total_put, stats.total_got, stats.size) == (4, 4, 0)


async def test_a_get_whose_deadline_comes_while_it_waits_ends_then(server, name):
    async with chute.open(server.url, name) as q:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await q.get(timeout=0.05)  # shorter than a read's slice
        assert loop.time() - t0 < 0.2
        await q.put(1)
        assert await q.get(timeout=0) == 1


async def test_waiting_consumers_get_each_item_once_and_leave_nothing_behind(server, name):
    async with chute.open(server.url, name) as q:
        got: list[int] = []

        async def consume(n: int) -> None:
            for _ in range(n):
                async with q.reserve(timeout=10) as job:
                    assert job.deliveries == 1
                    got.append(job.item)

        consumers = [asyncio.ensure_future(consume(25)) for _ in range(4)]
        for i in range(100):
            await q.put(i)
            if i % 10 == 0:
                await asyncio.sleep(0.01)  # let them wait on the server now and then
        await asyncio.gather(*consumers)
        assert sorted(got) == list(range(100))
        stats = await q.astatistics()
        assert (stats.total_put, stats.total_got, stats.size, stats.in_flight) == (100, 100, 0, 0)
    # Every read's consumer and bell went with it: only this process's consumer is left.
    assert _consumers_and_bells(server.url, name) == (1, [])


async def test_a_get_cancelled_while_it_waits_gives_back_what_its_read_took(server, name):
    async with chute.open(server.url, name) as q:
        for _ in range(5):
            task = asyncio.ensure_future(q.get())
            await asyncio.sleep(0.02)  # waiting on the server
            await q.put("kept")
            task.cancel()
            try:
                assert await task == "kept"
            except asyncio.CancelledError:
                assert await q.get(timeout=5) == "kept"
            assert q.qsize() == 0
        stats = await q.astatistics()
        assert (stats.total_put, stats.total_got) == (5, 5)


async def test_an_item_given_back_comes_before_newer_ones_for_a_waiting_consumer(server, name):
    async with chute.open(server.url, name) as q:
        waiting = asyncio.ensure_future(q.reserve(timeout=10))
        await asyncio.sleep(0.02)
        await q.put("first")
        job = await waiting
        waiting = asyncio.ensure_future(q.reserve(timeout=10))
        await asyncio.sleep(0.02)  # the next consumer waits on the server
        await job.anack()  # given back in place: it is cut short, and finds it
        await q.put("second")
        again = await waiting
        assert (again.item, again.deliveries) == ("first", 2)
        await again.aack()
        assert await q.get(timeout=5) == "second"
