"""A Redis queue's dead letters a page at a time: a page at an offset finds
its first entry by rank in an index of the dead letters' ids (kept by every
burial), made again from the stream when it does not match it (dead letters
written by an older chute)."""

from __future__ import annotations

import itertools
import json
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
    return f"dp-{os.getpid()}-{next(_names)}"


async def _bury(q, items):
    await q.put_batch(items)
    for _ in items:
        job = await q.reserve(timeout=10)
        await job.anack()


async def test_pages_after_dead_letters_written_without_the_index(server, name):
    r = redis.Redis.from_url(server.url)
    dead, rank = f"chute:{{{name}}}:dead", f"chute:{{{name}}}:deadrank"
    try:
        async with chute.open(server.url, name, max_deliveries=1) as q:
            await _bury(q, ["a", "b", "c"])
            assert r.zcard(rank) == 3  # kept by each burial
            # As an older chute leaves them: no index, and burials it missed.
            r.delete(rank)
            for item in ("d", "e"):
                r.xadd(dead, {"d": json.dumps(item), "n": 1, "r": "failed"})
            r.hincrby(f"chute:{{{name}}}:meta", "dead", 2)
            every = await q.adead_letters()
            assert [d.item for d in every] == ["a", "b", "c", "d", "e"]
            assert [d.item for d in await q.adead_letters(2, 2)] == ["c", "d"]
            assert r.zcard(rank) == 5  # made again from the stream
            assert [d.item for d in await q.adead_letters(2, 1, newest_first=True)] == ["d", "c"]
            # A burial the index missed, though as many as it holds: found by
            # its ends, which no longer match.
            r.xdel(dead, every[0].id)
            r.xadd(dead, {"d": json.dumps("f"), "n": 1, "r": "failed"})
            assert [d.item for d in await q.adead_letters(10, 1)] == ["c", "d", "e", "f"]
            assert await q.arequeue_dead([every[3].id]) == 1
            assert r.zcard(rank) == r.xlen(dead) == 4
            assert await q.get(timeout=10) == "d"
            assert [d.item for d in q.purge_dead()] == ["b", "c", "e", "f"]
            assert not r.exists(dead)
            assert not r.exists(rank)
            assert q.statistics().dead_lettered == 0
    finally:
        r.close()
