"""The Redis queue's immediate shutdown stops the gets and deletes nothing:
items never delivered, items in hand and delayed items all stay on the
server, for reopen() (as they stay in a SQLite queue's file).

Every test talks to a real server started on loopback by the tests."""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest
import redis

import chute
from tests.redis_server import RedisServer, shared_server

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


@pytest.fixture
def server() -> RedisServer:
    return shared_server()


@pytest.fixture
def name() -> str:
    return f"k-{os.getpid()}-{next(_names)}"


def _stored_on_the_server(server: RedisServer, name: str) -> int:
    """Entries of the queue's stream, and delayed items (kept apart until due)."""
    r = redis.Redis.from_url(server.url)
    try:
        return int(r.xlen(f"chute:{{{name}}}:items")) + int(r.zcard(f"chute:{{{name}}}:later"))
    finally:
        r.close()


async def test_items_never_delivered_stay_for_the_next_client(server, name):
    async with chute.open(server.url, name) as q:
        await q.put_batch(["a", "b", "c"])
        assert q.shutdown(immediate=True) == []
        with pytest.raises(chute.QueueShutDown):
            await q.get()
    assert _stored_on_the_server(server, name) == 3
    async with chute.open(server.url, name) as q:  # recorded on the server
        assert q.is_shutdown
        assert q.qsize() == 3
        q.reopen()
        assert await q.get_batch(5) == ["a", "b", "c"]


async def test_items_in_hand_and_delayed_stay_too(server, name):
    async with chute.open(server.url, name) as q, chute.open(server.url, name) as other:
        await q.put_batch(["in hand", "delayed", "c", "d"])
        held = await q.reserve(timeout=10)
        later = await q.reserve(timeout=10)
        later.nack(delay=0.5)
        assert other.shutdown(immediate=True) == []  # from another client
        with pytest.raises(chute.QueueShutDown):
            await q.get()
        s = q.statistics()
        assert (s.size, s.in_flight, s.delayed, s.unfinished_tasks) == (2, 2, 1, 4)
        assert _stored_on_the_server(server, name) == 4
        other.reopen()
        assert await q.get_batch(5) == ["c", "d"]
        held.ack()
        assert await q.get(timeout=10) == "delayed"
        for _ in range(3):
            q.task_done()
        await asyncio.wait_for(q.join(), 10)
        assert _stored_on_the_server(server, name) == 0
