"""What a Redis queue keeps on the server beyond its items: its bounds (which
belong to the queue, not to whoever opened it last), whether it exists at
all (looking creates nothing), and why each dead letter died.

Every test talks to a real server started on loopback by the tests."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis

import chute
from chute._backends.redis import RedisQueue
from tests.conftest import wait_until
from tests.redis_server import RedisServer, shared_server

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


@pytest.fixture
def server() -> RedisServer:
    return shared_server()


@pytest.fixture
def name() -> str:
    return f"s-{os.getpid()}-{next(_names)}"


def _other_process(code: str) -> str:
    """Run ``code`` in a fresh interpreter; what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        timeout=60,
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _keys(url: str, name: str) -> list[bytes]:
    r = redis.Redis.from_url(url)
    try:
        return sorted(r.scan_iter(match=f"chute:{{{name}}}:*"))
    finally:
        r.close()


def _empty_db(server: RedisServer, db: int) -> str:
    """A database of the shared server that holds nothing: its URL."""
    url = server.url.rsplit("/", 1)[0] + f"/{db}"
    r = redis.Redis.from_url(url)
    try:
        r.flushdb()
    finally:
        r.close()
    return url


# -- bounds belong to the queue ---------------------------------------------------------


async def test_a_bare_open_in_another_process_keeps_the_producers_bounds(server, name):
    async with chute.open(server.url, name, maxsize=5, max_deliveries=2) as q:
        seen = _other_process(f"""
            import chute
            with chute.open({server.url!r}, {name!r}) as q:
                print(q.maxsize, q.statistics().maxsize)
        """)
        assert seen == "5 5"
        await q.put_batch(range(5))
        with pytest.raises(chute.QueueFull):
            q.put_nowait(5)
        assert q.qsize() == 5
        await q.get_batch(5)
        await q.put("poison")
        for expected in ("retried", "dead"):  # max_deliveries=2 held too
            job = await q.reserve(timeout=10)
            job.nack()
            assert job.outcome == expected


async def test_a_value_passed_elsewhere_replaces_the_stored_one_for_every_client(server, name):
    async with chute.open(server.url, name, maxsize=1) as q:
        await q.put("a")
        _other_process(f"""
            import chute
            with chute.open({server.url!r}, {name!r}, maxsize=3, max_deliveries=1):
                pass
        """)
        assert q.maxsize == 3
        q.put_nowait("b")  # the next call sees the new bound
        q.put_nowait("c")
        with pytest.raises(chute.QueueFull):
            q.put_nowait("d")
        job = await q.reserve(timeout=10)
        job.nack()
        assert job.outcome == "dead"


async def test_configure_wakes_a_putter_waiting_on_the_full_queue(server, name):
    async with chute.open(server.url, name, maxsize=1) as q:
        await q.put("a")
        putter = asyncio.create_task(q.put("b"))
        await wait_until(lambda: q.statistics().putters_waiting == 1)
        q.configure(max_deliveries=3)  # not the bound: still waiting
        assert not putter.done()
        q.configure(maxsize=2)
        await asyncio.wait_for(putter, 10)
        assert (q.maxsize, q.qsize(), q.full()) == (2, 2, True)


def test_the_sync_faces_maxsize_wakes_a_putter_blocked_in_a_thread(server, name):
    with chute.open(server.url, name, maxsize=1) as q:
        q.sync.put("a")
        done = threading.Event()

        def put() -> None:
            q.sync.put("b", timeout=30)
            done.set()

        t = threading.Thread(target=put)
        t.start()
        try:
            deadline = time.monotonic() + 10
            while q.statistics().putters_waiting != 1:  # the thread is blocked
                assert time.monotonic() < deadline
                threading.Event().wait(0.001)
            q.sync.maxsize = 2
            assert done.wait(10)
        finally:
            t.join(30)
        assert (q.sync.maxsize, q.qsize()) == (2, 2)
        q.sync.configure(maxsize=0)
        assert not q.full()


async def test_configure_refuses_bad_values_and_stores_nothing(server, name):
    async with chute.open(server.url, name, maxsize=2, max_deliveries=2) as q:
        with pytest.raises(TypeError, match=r"^max_deliveries must be an int >= 1 or None"):
            q.configure(max_deliveries="3")
        with pytest.raises(ValueError):
            q.maxsize = -1
        assert q.maxsize == 2
    with pytest.raises(TypeError, match=r"^max_deliveries must be an int >= 1 or None"):
        await chute.open(server.url, name, max_deliveries=2.5)


# -- looking never creates --------------------------------------------------------------


async def test_create_false_names_what_is_missing_and_creates_nothing(server, name):
    url = _empty_db(server, 11)
    with pytest.raises(chute.QueueNotFound) as caught:
        await chute.open(url, name, create=False)
    assert str(caught.value) == (
        f"no queue {name!r} on redis://127.0.0.1:{server.port}/11; no queues there"
    )
    assert _keys(url, name) == []
    async with chute.open(url, "thumbnails"), chute.open(url, "emails"):
        pass
    with pytest.raises(chute.QueueNotFound, match=r"; queues there: emails, thumbnails$"):
        await chute.open(url, name, create=False)
    assert _keys(url, name) == []
    async with chute.open(url, "emails", create=False) as q:  # one that exists opens
        await q.put("x")


def test_queue_names_lists_the_queues_by_their_meta_and_creates_nothing(server):
    url = _empty_db(server, 12)
    assert RedisQueue.queue_names(url) == []
    assert chute._open.queue_names(url, connect_timeout=2) == []
    for n in ("b", "a", "c{x}"):
        with chute.open(url, n):
            pass
    r = redis.Redis.from_url(url)
    try:
        r.hset("chute:{lookalike}:meta", "not", "chute's")  # no schema field: not a queue
        r.set("chute:{other}:meta", "a string")
        before = r.dbsize()
        assert RedisQueue.queue_names(url) == ["a", "b", "c{x}"]
        assert r.dbsize() == before
    finally:
        r.close()
    with pytest.raises(TypeError, match="unknown option"):
        RedisQueue.queue_names(url, maxsise=3)


# -- dead letters keep why ----------------------------------------------------------------


async def test_a_dead_letter_keeps_the_last_error_reason_deliveries_and_time(server, name):
    async with chute.open(server.url, name, max_deliveries=3) as q:
        await q.put({"id": 1})
        before = time.time()
        with pytest.raises(KeyError):
            async with q.reserve():
                raise KeyError("first")
        job = await q.reserve(timeout=10)
        job.nack(delay=0.05, error=RuntimeError("second"))  # kept across the delay
        assert job.outcome == "retried"
        assert q.statistics().delayed == 1
        job = await q.reserve(timeout=10)
        job.nack()  # no error on the last try: the last one given is kept
        assert job.outcome == "dead"
        [dead] = q.dead_letters()
        assert (dead.item, dead.deliveries, dead.reason) == ({"id": 1}, 3, "failed")
        assert (dead.error_type, dead.error) == ("RuntimeError", "second")
        assert dead.traceback is not None
        assert "RuntimeError: second" in dead.traceback
        assert before - 1 <= dead.died_at <= time.time() + 1
        assert json.loads(json.dumps(dead.to_dict()))["error"] == "second"


async def test_an_expired_lease_buries_the_item_with_the_error_it_last_failed_with(server, name):
    async with chute.open(server.url, name, visibility_timeout=0.2, max_deliveries=2) as q:
        await q.put("slow")
        job = await q.reserve()
        job.nack(error=TimeoutError("took too long"))
        job = await q.reserve(timeout=10)  # its last try: the consumer vanishes
        with pytest.raises(TimeoutError):
            await q.get(timeout=1)  # the lease runs out: buried, not delivered
        [dead] = q.purge_dead()
        assert (dead.reason, dead.deliveries) == ("lease expired", 2)
        assert (dead.error_type, dead.error) == ("TimeoutError", "took too long")


async def test_an_acked_item_leaves_no_error_behind(server, name):
    async with chute.open(server.url, name) as q:
        await q.put_batch(["a", "b"])
        for _ in range(2):
            job = await q.reserve()
            job.nack(error=ValueError("once"))
        async with q.reserve() as job:
            pass
        assert job.outcome == "acked"
        assert await q.get() in ("a", "b")  # a plain get deletes it (and its error) too
    r = redis.Redis.from_url(server.url)
    try:
        assert r.exists(f"chute:{{{name}}}:errors") == 0
    finally:
        r.close()


async def test_statistics_count_delayed_items_in_flight_and_delayed(server, name):
    async with chute.open(server.url, name, maxsize=1) as q:
        await q.put("later")
        job = await q.reserve()
        job.nack(delay=60)
        s = q.statistics()
        assert (s.size, s.delayed, s.in_flight, s.unfinished_tasks) == (0, 1, 1, 1)
        assert q.unfinished_tasks == q.sync.unfinished_tasks == 1
        with pytest.raises(chute.QueueEmpty):
            q.get_nowait()
        q.put_nowait("now")  # the bound counts what waits, as qsize() does
        with pytest.raises(chute.QueueFull):
            q.put_nowait("more")
        assert await q.get() == "now"
        s = q.statistics()
        assert (s.size, s.delayed, s.in_flight, s.unfinished_tasks) == (0, 1, 1, 2)


async def test_is_shutdown_is_a_property_that_can_be_false(server, name):
    async with chute.open(server.url, name) as q:
        if q.is_shutdown:  # a bound method here was always true
            pytest.fail("a new queue is not shut down")
        q.shutdown()
        assert q.is_shutdown is True
        assert q.sync.is_shutdown is True


# -- a queue made by the previous release ----------------------------------------------


async def test_a_queue_of_schema_1_opens_and_lists_its_old_dead_letters(server, name):
    """The keys as chute's schema 1 wrote them: an item waiting, one given
    back with a delay, and one dead letter (item and deliveries only)."""
    keys = {part: f"chute:{{{name}}}:{part}" for part in ("items", "meta", "dead", "later")}
    r = redis.Redis.from_url(server.url)
    try:
        r.xgroup_create(keys["items"], "chute", "0", mkstream=True)
        r.hset(
            keys["meta"],
            mapping={"v": 1, "state": 0, "total_put": 3, "total_got": 2, "peak": 2,
                     "dead": 1, "unfinished": 2, "maxsize": 4, "maxdel": 3},
        )  # fmt: skip
        r.xadd(keys["items"], {"d": json.dumps("waiting")})
        r.zadd(keys["later"], {f"1-0:1:{json.dumps('delayed')}": 0})  # due at once
        r.xadd(keys["dead"], {"d": json.dumps("old poison"), "n": 3})
    finally:
        r.close()
    async with chute.open(server.url, name) as q:
        assert q.maxsize == 4  # kept, as stored
        [dead] = q.dead_letters()
        assert (dead.item, dead.deliveries, dead.reason) == ("old poison", 3, "failed")
        assert (dead.error_type, dead.error, dead.traceback) == (None, None, None)
        assert dead.died_at > 0
        assert q.statistics().delayed == 1
        got = [await q.reserve(timeout=10) for _ in range(2)]
        assert sorted((j.item, j.deliveries) for j in got) == [("delayed", 2), ("waiting", 1)]
        for job in got:
            job.nack(error=ValueError("new"))  # the new fields work on the old queue
            assert job.outcome == "retried"
    r = redis.Redis.from_url(server.url)
    try:
        assert r.hget(keys["meta"], "v") == b"2"
    finally:
        r.close()
