"""The Redis transport beyond the shared contract: URLs, other clients,
leases, killed consumers, and a server that goes away and comes back.

Every test talks to a real server started on loopback by the tests."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import chute
from tests.redis_server import RedisServer, free_port, shared_server

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


@pytest.fixture
def server() -> RedisServer:
    return shared_server()


@pytest.fixture
def name() -> str:
    return f"t-{os.getpid()}-{next(_names)}"


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of this test's own, that keeps its data on disk."""
    s = RedisServer(appendonly=True).start()
    try:
        yield s
    finally:
        s.remove()


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        timeout=60,
        check=False,
        capture_output=True,
        text=True,
    )


# -- opening -------------------------------------------------------------------------


async def test_open_put_get_and_the_items_stay_on_the_server(server, name):
    async with chute.open(server.url, name, maxsize=5) as q:
        await q.put({"n": 1})
        await q.put_batch([2, [3, "x"]])
        assert (q.qsize(), q.maxsize) == (3, 5)
    async with chute.open(server.url, name) as q:  # another client: still there
        assert await q.get_batch(10) == [{"n": 1}, 2, [3, "x"]]


async def test_databases_of_one_server_are_apart(server, name):
    base = server.url.rsplit("/", 1)[0]
    async with chute.open(f"{base}/1", name) as one, chute.open(f"{base}/2", name) as two:
        await one.put("in db 1")
        assert two.qsize() == 0
        assert await one.get() == "in db 1"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("redis://", "no host"),
        ("redis://localhost:notaport/0", "port"),
        ("redis://localhost:6379/zero", "database"),
        ("rediss://localhost/0#frag", "fragment"),
    ],
)
def test_a_wrong_url_is_refused_at_the_call(bad, message):
    with pytest.raises(ValueError, match=message):
        chute.open(bad, "q")


async def test_a_server_that_is_not_there_is_named():
    port = free_port()  # nothing listens here
    with pytest.raises(chute.ChuteError, match=f"127.0.0.1:{port} is unreachable"):
        await chute.open(f"redis://127.0.0.1:{port}/0", "q", connect_timeout=2)


async def test_a_password_in_the_url_and_a_wrong_one_named():
    s = RedisServer(password="s3cret").start()
    try:
        async with chute.open(s.url, "q") as q:
            await q.put("in")
            assert await q.get() == "in"
        wrong = s.url.replace("s3cret", "guess")
        with pytest.raises(chute.ChuteError, match="refused the credentials"):
            await chute.open(wrong, "q")
    finally:
        s.remove()


async def test_keys_not_made_by_chute_are_refused_and_left_alone(server, name):
    r = redis.Redis.from_url(server.url)
    try:
        r.set(f"chute:{{{name}}}:items", "someone else's")
        with pytest.raises(chute.ChuteError, match="not made by chute"):
            await chute.open(server.url, name)
        assert r.get(f"chute:{{{name}}}:items") == b"someone else's"
        r.xadd(f"chute:{{{name}-b}}:items", {"field": "value"})
        with pytest.raises(chute.ChuteError, match="not made by chute"):
            await chute.open(server.url, f"{name}-b")
    finally:
        r.close()


async def test_a_queue_from_a_newer_chute_is_refused(server, name):
    async with chute.open(server.url, name):
        pass
    r = redis.Redis.from_url(server.url)
    try:
        r.hset(f"chute:{{{name}}}:meta", "v", 99)
        with pytest.raises(chute.ChuteError, match="newer chute"):
            await chute.open(server.url, name)
    finally:
        # Not left on the shared server, where every `chute ls` would meet it.
        r.delete(*r.keys(f"chute:{{{name}}}:*"))
        r.close()


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"maxsize": -1}, ValueError),
        ({"visibility_timeout": 0}, ValueError),
        ({"max_deliveries": 0}, ValueError),
        ({"codec": "yaml"}, ValueError),
    ],
)
async def test_bad_options_are_refused(server, name, options, error):
    with pytest.raises(error):
        await chute.open(server.url, name, **options)


async def test_deleted_keys_are_named_not_mistaken_for_empty(server, name):
    async with chute.open(server.url, name) as q:
        r = redis.Redis.from_url(server.url)
        try:
            r.delete(*(f"chute:{{{name}}}:{k}" for k in ("items", "meta")))
        finally:
            r.close()
        with pytest.raises(chute.ChuteError, match="no longer on Redis"):
            await q.put(1)


# -- codecs --------------------------------------------------------------------------


async def test_an_item_json_cannot_encode_fails_at_put_and_stores_nothing(server, name):
    async with chute.open(server.url, name) as q:
        with pytest.raises(TypeError):
            await q.put({1, 2})
        with pytest.raises(TypeError):
            await q.put_batch([1, object()])
        assert q.qsize() == 0
        assert q.statistics().total_put == 0


async def test_pickle_only_when_asked_and_an_undecodable_item_is_a_dead_letter(server, name):
    async with chute.open(server.url, name, codec="pickle") as q:
        await q.put({1, 2})
        assert await q.get() == {1, 2}
    async with chute.open(server.url, f"{name}-raw", codec="pickle") as q:
        r = redis.Redis.from_url(server.url)
        try:
            r.xadd(f"chute:{{{name}-raw}}:items", {"d": b"not a pickle"})
        finally:
            r.close()
        with pytest.raises(chute.ChuteError, match="could not be decoded"):
            await q.get()
        assert q.statistics().dead_lettered == 1
        assert q.qsize() == 0


# -- leases, delays and dead letters -------------------------------------------------


async def test_a_lease_runs_out_and_a_late_ack_is_refused(server, name):
    async with chute.open(server.url, name, visibility_timeout=0.2) as q:
        await q.put("slow")
        first = await q.reserve()
        second = await q.reserve(timeout=10)  # once the first lease ran out
        assert (second.item, second.deliveries) == ("slow", 2)
        with pytest.raises(chute.ChuteError, match="lease ran out"):
            first.ack()  # fenced: it deletes nothing
        second.ack()
        s = q.statistics()
        assert (s.size, s.in_flight, s.unfinished_tasks) == (0, 0, 0)


async def test_an_item_given_back_elsewhere_is_not_passed_by_a_waiting_get(
    server, name, monkeypatch
):
    # A get whose look a moment ago found nothing waits on the server at
    # once (no look first). Another client then gives an item back in place
    # and puts a new one: the wait hands over the new one, which must go
    # back, so that the one given back comes first, as it would after a look.
    # (The look's freshness is stretched, so that the slow steps of a
    # loaded machine cannot make the get look first anyway.)
    from chute._backends import redis_link

    monkeypatch.setattr(redis_link, "POLL", 60.0)
    async with chute.open(server.url, name) as here, chute.open(server.url, name) as there:
        await there.put("old")
        job = await there.reserve()
        with pytest.raises(TimeoutError):
            await here.get(timeout=0.05)  # finds nothing: a fresh look
        await job.anack()  # back in place, where only a look finds it
        await there.put("new")
        assert [await here.get(timeout=10), await here.get(timeout=10)] == ["old", "new"]
        s = await here.astatistics()
        assert (s.size, s.in_flight, s.total_got) == (0, 0, 3)


async def test_an_immediate_shutdown_between_a_wait_and_its_count_hands_nothing_out(server, name):
    # A waiting get's read on the server hands an item to the read's own
    # consumer; TOOK, sent behind it, hands it to the get. Should an
    # immediate shutdown come in between (here, ordered by sending the read
    # and TOOK apart), the item goes back and the get raises, instead of both.
    async with chute.open(server.url, name) as here, chute.open(server.url, name) as there:
        backend = here._backend
        await there.put("x")
        read, took_args = backend._reading(1, 1.0)
        r = redis.asyncio.Redis.from_url(server.url)
        try:
            assert await r.execute_command(*read)  # the read got "x"
            there.shutdown(immediate=True)
            status = await backend._client()[1]["took"](r, took_args)
        finally:
            await r.aclose()
        assert status == [b"shutdown"]
        s = await there.astatistics()
        assert (s.size, s.in_flight, s.total_got) == (1, 0, 0)
        there.reopen()
        assert await here.get(timeout=10) == "x"


async def test_a_read_answered_while_its_get_waits_is_counted_in_the_same_round_trip(server, name):
    # TOOK rides behind the blocked read: a waiting get that is handed an
    # item makes no call of its own to count it.
    async with chute.open(server.url, name) as here, chute.open(server.url, name) as there:
        await there.put("warm")  # the scripts loaded, the pool's connections made
        assert await here.get(timeout=10) == "warm"
        getter = asyncio.create_task(here.get(timeout=30))
        await wait_for_getters(here, 1)
        backend = here._backend
        calls: list[str] = []
        script = backend._script

        async def counted(name: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return await script(name, *args, **kwargs)

        backend._script = counted
        try:
            await there.put("x")
            assert await asyncio.wait_for(getter, 10) == "x"
        finally:
            del backend._script
        assert [c for c in calls if c in ("took", "claim")] == []
        s = await here.astatistics()
        assert (s.size, s.in_flight, s.total_got) == (0, 0, 2)


async def test_expired_on_its_last_delivery_it_becomes_a_dead_letter(server, name):
    async with chute.open(server.url, name, visibility_timeout=0.1, max_deliveries=1) as q:
        await q.put("poison")
        job = await q.reserve()
        assert job.deliveries == 1
        with pytest.raises(TimeoutError):
            await q.get(timeout=0.5)  # its lease ran out: buried, not delivered
        [dead] = q.dead_letters()
        assert (dead.item, dead.deliveries, dead.reason) == ("poison", 1, "lease expired")
        assert (dead.error_type, dead.error, dead.traceback) == (None, None, None)
        assert q.statistics().unfinished_tasks == 0


@pytest.mark.parametrize("delay", [0.3, 1.5])  # within and beyond the visibility timeout
async def test_nack_with_a_delay_hides_the_item_until_then(server, name, delay):
    async with chute.open(server.url, name, visibility_timeout=1.0) as q:
        await q.put("retry me")
        job = await q.reserve()
        job.nack(delay=delay)
        with pytest.raises(chute.QueueEmpty):
            q.get_nowait()
        s = q.statistics()  # in flight until due, as on every transport
        assert (s.delayed, s.size, s.in_flight) == (1, 0, 1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with q.reserve(timeout=10) as again:
            assert loop.time() - t0 >= delay * 0.8
            assert (again.item, again.deliveries) == ("retry me", 2)
        assert q.statistics().unfinished_tasks == 0


async def test_a_long_handler_extends_its_lease(server, name):
    async with chute.open(server.url, name, visibility_timeout=0.4) as q:
        await q.put("long")
        async with q.reserve() as job:
            for _ in range(4):
                await asyncio.sleep(0.2)
                await job.extend()
            with pytest.raises(chute.QueueEmpty):
                q.get_nowait()  # still ours
        assert q.statistics().unfinished_tasks == 0


# -- other clients, processes and threads ---------------------------------------------


async def test_a_put_in_another_process_wakes_a_waiting_get(server, name):
    async with chute.open(server.url, name) as q:
        getter = asyncio.create_task(q.get(timeout=30))
        await wait_for_getters(q, 1)  # waiting before the put lands, not finding it there
        code = f"""
            import chute
            with chute.open({server.url!r}, {name!r}) as q:
                q.sync.put("from afar")
                q.shutdown()
        """
        done = await asyncio.to_thread(_run, code)
        assert done.returncode == 0, done.stderr
        assert await asyncio.wait_for(getter, 10) == "from afar"
        with pytest.raises(chute.QueueShutDown):  # seen by every client
            await q.get(timeout=10)


async def test_a_shutdown_by_another_client_wakes_a_waiting_get(server, name):
    async with chute.open(server.url, name) as q, chute.open(server.url, name) as other:
        getter = asyncio.create_task(q.get())
        await wait_for_getters(q, 1)
        other.shutdown()
        with pytest.raises(chute.QueueShutDown):
            await asyncio.wait_for(getter, 10)
        other.reopen()
        await other.put("again")
        assert await q.get(timeout=10) == "again"


async def wait_for_getters(q: Any, n: int) -> None:
    from tests.conftest import wait_until

    await wait_until(lambda: q.statistics().getters_waiting == n)


def _hold_and_die(url: str, name: str, ready: Any) -> None:
    with chute.open(url, name, visibility_timeout=0.5) as q:
        held = [q.sync.reserve().__enter__() for _ in range(3)]
        ready.put([job.item for job in held])
        threading.Event().wait(60)  # killed here, holding three leases


async def test_a_consumer_killed_holding_reservations_loses_nothing(server, name):
    async with chute.open(server.url, name, visibility_timeout=0.5) as q:
        await q.put_batch(["a", "b", "c", "d"])
        ctx = mp.get_context("spawn")
        ready = ctx.SimpleQueue()
        p = ctx.Process(target=_hold_and_die, args=(server.url, name, ready))
        p.start()
        try:
            assert await asyncio.to_thread(ready.get) == ["a", "b", "c"]
            os.kill(p.pid, signal.SIGKILL)
        finally:
            p.join(30)
        got = []
        for _ in range(4):
            async with q.reserve(timeout=10) as job:
                got.append((job.item, job.deliveries))
        assert sorted(got) == [("a", 2), ("b", 2), ("c", 2), ("d", 1)]
        assert q.statistics().unfinished_tasks == 0


def test_the_sync_face_in_threads(server, name):
    with chute.open(server.url, name, maxsize=2) as q:
        got: list[Any] = []
        consumer = threading.Thread(target=lambda: got.extend(q.sync.get(timeout=10) for _ in "ab"))
        consumer.start()
        q.sync.put("a")
        q.sync.put_batch(["b"])
        consumer.join(20)
        assert got == ["a", "b"]
        q.sync.put_batch([1, 2])
        with pytest.raises(chute.QueueFull):
            q.sync.put(3, timeout=0.05)
        with q.sync.reserve() as job:
            assert job.item == 1
        assert q.sync.get_batch(5) == [2]
        q.task_done()
        q.task_done()
        q.task_done()
        q.sync.join()


# -- the server goes away --------------------------------------------------------------


async def test_calls_fail_clearly_while_the_server_is_down_and_work_after(own_server):
    async with chute.open(own_server.url, "restart", visibility_timeout=1.0) as q:
        await q.put_batch(["kept 1", "kept 2", "kept 3"])
        job = await q.reserve()  # held across the restart
        assert job.item == "kept 1"
        own_server.stop()  # writes its append-only file
        with pytest.raises(chute.ChuteError, match="unreachable"):
            await q.put("while down")
        with pytest.raises(chute.ChuteError, match=r"unreachable|retrying"):
            await q.get()
        own_server.start()  # same port, same files
        await _retrying(job.ack)  # the lease survived the restart
        assert await _retrying(lambda: q.get_batch(10, timeout=10)) == ["kept 2", "kept 3"]
        s = q.statistics()
        assert (s.size, s.total_put, s.unfinished_tasks) == (0, 3, 2)


async def test_scripts_flushed_from_the_server_are_sent_again(server, name):
    # A server that lost the scripts (restarted, or SCRIPT FLUSH) answers a
    # script's call with NOSCRIPT: the call sends the script and goes on.
    async with chute.open(server.url, name) as q:
        await q.put("before")
        r = redis.Redis.from_url(server.url)
        try:
            r.script_flush()
        finally:
            r.close()
        await q.put("after")
        assert [await q.get(), await q.get()] == ["before", "after"]


def _flush_scripts(url: str) -> None:
    r = redis.Redis.from_url(url)
    try:
        r.script_flush()
    finally:
        r.close()


async def test_scripts_flushed_while_a_get_waits_are_sent_again(server, name):
    # The count sent behind a waiting get's read finds the script gone: it
    # is sent again, and the get has its item (the loop's face).
    async with chute.open(server.url, name) as q, chute.open(server.url, name) as other:
        getter = asyncio.create_task(q.get(timeout=30))
        await wait_for_getters(q, 1)
        _flush_scripts(server.url)
        await other.put("x")
        assert await asyncio.wait_for(getter, 10) == "x"
        assert q.statistics().total_got == 1


async def wait_blocked_on_server(url: str, q: Any) -> None:
    """Until ``q``'s waiting get is blocked in its ``XREADGROUP`` on the
    server (asked of the server: an explicit step)."""
    from tests.conftest import wait_until

    r = redis.Redis.from_url(url)

    def blocked() -> bool:
        ids = {cid for _client, cid in q._backend._blocked}
        return any(
            int(c["id"]) in ids and c["cmd"] == "xreadgroup" and "b" in c["flags"]
            for c in r.client_list()
        )

    try:
        await wait_until(blocked)
    finally:
        r.close()


async def test_a_cancelled_wait_whose_count_the_server_lost_gives_its_item_back(server, name):
    # The read is answered, its count (TOOK) finds the script gone, and the
    # get is cancelled meanwhile: the count is sent again all the same, and
    # the item given back, not left pending with the read's own consumer.
    async with chute.open(server.url, name) as q, chute.open(server.url, name) as other:
        getter = asyncio.create_task(q.get(timeout=30))
        await wait_blocked_on_server(server.url, q)
        _flush_scripts(server.url)
        other.put_nowait("x")  # answers the read; TOOK, behind it, is refused
        getter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getter
        assert await q.get(timeout=10) == "x"
        assert q.statistics().total_got == 1


async def test_a_count_sent_again_while_its_get_is_cancelled_is_seen_through(
    server, name, monkeypatch
):
    # As above, but the count sent again must first connect (the read
    # holds its own connection), and the get is cancelled meanwhile: the
    # count goes on all the same, and the item comes back.
    from chute._backends import redis_client

    async with chute.open(server.url, name) as q, chute.open(server.url, name) as other:
        getter = asyncio.create_task(q.get(timeout=30))
        await wait_blocked_on_server(server.url, q)
        connecting, connected = asyncio.Event(), asyncio.Event()
        checkout = redis_client.checkout

        async def slow_checkout(pool: Any) -> Any:
            connecting.set()
            await connected.wait()
            return await checkout(pool)

        monkeypatch.setattr(redis_client, "checkout", slow_checkout)
        _flush_scripts(server.url)
        other.put_nowait("x")  # answers the read; TOOK, behind it, is refused
        await connecting.wait()  # TOOK is about to be sent again
        getter.cancel()
        monkeypatch.undo()
        connected.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(getter, 10)
        assert await q.get(timeout=10) == "x"
        assert q.statistics().total_got == 1


def test_scripts_flushed_while_a_sync_get_waits_are_sent_again(server, name):
    # The same from a thread: the sync face's read and count.
    with chute.open(server.url, name) as q, chute.open(server.url, name) as other:
        got: list[Any] = []
        getter = threading.Thread(target=lambda: got.append(q.sync.get(timeout=30)))
        getter.start()
        deadline = time.monotonic() + 10
        while q.statistics().getters_waiting != 1:
            assert time.monotonic() < deadline, "the get never waited"
            time.sleep(0.005)
        _flush_scripts(server.url)
        other.sync.put("x")
        getter.join(10)
        assert got == ["x"]
        assert q.statistics().total_got == 1


async def _retrying(call: Any, timeout: float = 20.0) -> Any:
    """What a program does while the server is away: retry on ChuteError
    (a call on a connection the restart broke fails once, and takes nothing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            result = call()
            return await result if asyncio.iscoroutine(result) else result
        except chute.ChuteError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_a_killed_server_keeps_what_it_wrote_and_nothing_is_half_stored(own_server):
    async with chute.open(own_server.url, "crash") as q:
        for i in range(50):
            await q.put(i)
        getter = asyncio.create_task(q.get_batch(100))
        got = await asyncio.wait_for(getter, 10)
        assert got == list(range(50))
        await q.put_batch(list(range(50, 60)))
        own_server.kill()  # its file is synced at every write (appendfsync always)
        own_server.start()
        assert await _retrying(lambda: q.get_batch(100, timeout=10)) == list(range(50, 60))


# -- regressions of a review ---------------------------------------------------------


async def test_what_a_get_took_is_deleted_even_if_its_deletion_is_cancelled(server, name):
    async with chute.open(server.url, name) as q:
        await q.put("once")
        assert await q.get() == "once"
        finisher = q._backend._finisher
        assert finisher is not None
        finisher.cancel()  # as asyncio.run does with the tasks left at its end
        await asyncio.gather(finisher, return_exceptions=True)
    r = redis.Redis.from_url(server.url)  # closing deleted it: never delivered again
    try:
        assert r.xlen(f"chute:{{{name}}}:items") == 0
    finally:
        r.close()


class HeldReply:
    """The first reply that ``matches`` stays in the client's buffer, not
    read out, until ``release()``: a read cancelled meanwhile leaves it
    there for the next read, as redis-py's parsers do (an explicit step for
    "the server answered, the caller has not seen it yet")."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, matches: Any) -> None:
        from chute._backends import redis_client

        self.arrived, self._released = asyncio.Event(), asyncio.Event()
        self.reply: Any = None
        read = redis_client._BoundedAsyncConnection.read_response
        buffered: dict[Any, Any] = {}

        async def read_response(conn: Any, *args: Any, **kwargs: Any) -> Any:
            if conn in buffered:
                return buffered.pop(conn)
            reply = await read(conn, *args, **kwargs)
            if self.arrived.is_set() or not matches(reply):
                return reply
            self.reply = buffered[conn] = reply
            self.arrived.set()
            await self._released.wait()
            return buffered.pop(conn)

        self._undo = monkeypatch.undo
        monkeypatch.setattr(redis_client._BoundedAsyncConnection, "read_response", read_response)

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self._undo()


def _status(reply: Any, status: bytes) -> bool:
    return isinstance(reply, list) and reply[:1] == [status]


async def test_a_give_back_fences_off_the_late_holder(server, name, monkeypatch):
    async with chute.open(server.url, name, maxsize=1, visibility_timeout=0.2) as q:
        await q.put("a")
        job = await q.reserve()
        await asyncio.sleep(0.3)  # its lease runs out
        held = HeldReply(monkeypatch, lambda reply: _status(reply, b"ok"))
        getter = asyncio.create_task(q.get())
        await held.arrived.wait()  # the get claimed the item on the server...
        getter.cancel()  # ...and, cancelled before it had the answer, gives it back
        held.release()
        with pytest.raises(asyncio.CancelledError):
            await getter
        held.stop()
        with pytest.raises(chute.ChuteError, match="lease ran out"):
            job.ack()  # the item is nobody's now: the old holder cannot delete it
        assert q.qsize() == 1
        assert await q.get() == "a"
        assert q.qsize() == 0
        q.put_nowait("b")  # the bound counts what is there, nothing more


async def test_a_put_cancelled_once_the_server_stored_it_is_taken_back(server, name, monkeypatch):
    async with chute.open(server.url, name, maxsize=2) as q:
        await q.put("a")
        held = HeldReply(monkeypatch, lambda reply: _status(reply, b"ok"))
        putter = asyncio.create_task(q.put("b"))
        await held.arrived.wait()  # stored on the server; the putter has not seen it
        assert q.qsize() == 2
        putter.cancel()
        held.release()
        with pytest.raises(asyncio.CancelledError):
            await putter
        held.stop()
        assert q.qsize() == 1  # as if it never was: the cancellation took it back
        assert await q.get() == "a"
        q.put_nowait("c")
        q.put_nowait("d")  # the bound's room is whole again
        assert q.statistics().total_put == 3


async def test_a_cancelled_wait_answered_by_the_server_counts_nothing(server, name):
    async with chute.open(server.url, name) as q, chute.open(server.url, name) as other:
        getter = asyncio.create_task(q.get())
        await wait_for_getters(q, 1)
        other.put_nowait("x")  # the server hands it to the waiting read...
        getter.cancel()  # ...which is cancelled: it gives "x" back
        with pytest.raises(asyncio.CancelledError):
            await getter
        assert q.statistics().total_got == 0
        assert await q.get(timeout=10) == "x"
        assert q.statistics().total_got == 1


async def test_aclose_does_not_hang_when_the_server_is_gone(own_server):
    q = await chute.open(own_server.url, "gone")
    await q.put("x")
    assert await q.get() == "x"
    own_server.kill()
    await asyncio.wait_for(q.aclose(), 10)


async def test_a_server_that_stops_answering_fails_the_call_then_serves_again(
    own_server, monkeypatch
):
    # The reply timeout, shortened: a stopped server (SIGSTOP: connected,
    # never answering) fails the call with chute's error instead of
    # hanging it, and once it answers again the queue goes on.
    from chute._backends import redis_client

    monkeypatch.setattr(redis_client, "REPLY_TIMEOUT", 1.0)
    q = await chute.open(own_server.url, "stopped")
    try:
        await q.put("before")
        assert own_server.proc is not None
        os.kill(own_server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(chute.ChuteError, match="Timeout reading"):
                await asyncio.wait_for(q.put("during"), 20)
        finally:
            os.kill(own_server.proc.pid, signal.SIGCONT)
        # After a lost connection calls fail fast for a moment (the
        # backoff); a caller tries again.
        for _ in range(100):
            try:
                await q.put("after")
                break
            except chute.ChuteError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the server never served again")
        got = [await q.get(timeout=5) for _ in range(2)]
        # The put that failed may have been stored (the server had it):
        # it is at most once more, never in place of the others.
        assert got[0] == "before"
        assert got[1] in ("during", "after")
    finally:
        await q.aclose()


async def test_an_undecodable_dead_letter_does_not_take_the_others_with_it(server, name):
    async with chute.open(server.url, name, max_deliveries=1) as q:
        await q.put({"keep": "me"})
        async with q.reserve() as job:
            job.nack()  # its last delivery: a dead letter
        r = redis.Redis.from_url(server.url)
        try:
            r.xadd(f"chute:{{{name}}}:items", {"d": b"\xffnot json"})
        finally:
            r.close()
        with pytest.raises(chute.ChuteError, match="could not be decoded"):
            await q.get()
        dead = q.dead_letters()
        assert [d.item for d in dead] == [{"keep": "me"}, b"\xffnot json"]
        assert [d.reason for d in dead] == ["failed", "undecodable"]
        assert dead[1].error_type == "UnicodeDecodeError"
        assert [d.item for d in q.purge_dead()] == [{"keep": "me"}, b"\xffnot json"]
        assert q.statistics().dead_lettered == 0


async def test_requeue_into_a_shut_down_queue_is_refused(server, name):
    async with chute.open(server.url, name, max_deliveries=1) as q:
        await q.put("x")
        async with q.reserve() as job:
            job.nack()
        q.shutdown()
        with pytest.raises(chute.QueueShutDown):
            q.requeue_dead()
        assert [d.item for d in q.dead_letters()] == ["x"]


# -- connecting, and a server lost at the worst moment ---------------------------------


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and
    never answers: a hung server, or a proxy with nothing behind it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def _opens_within(url: str, seconds: float) -> chute.ChuteError:
    t0 = time.monotonic()
    with pytest.raises(chute.ChuteError) as caught:
        chute.open(url, "q", connect_timeout=seconds).__enter__()
    assert time.monotonic() - t0 < seconds + 2.0  # not the 30 s reply timeout
    return caught.value


def test_connect_timeout_bounds_a_server_that_accepts_and_never_answers(silent_listener):
    error = _opens_within(f"redis://127.0.0.1:{silent_listener}/0", 0.5)
    assert f"127.0.0.1:{silent_listener} is unreachable" in str(error)


def test_connect_timeout_bounds_a_tls_handshake_with_a_plain_server(server):
    error = _opens_within(server.url.replace("redis://", "rediss://"), 0.5)
    assert f"127.0.0.1:{server.port}" in str(error)


def test_a_tls_handshake_that_never_ends_is_bounded_too(silent_listener):
    _opens_within(f"rediss://127.0.0.1:{silent_listener}/0", 0.5)


def _public(exc: BaseException) -> bool:
    return getattr(chute, type(exc).__name__, None) is type(exc) and "_redis" not in repr(exc)


async def test_errors_are_public_types(server, name):
    async with chute.open(server.url, name) as q:
        r = redis.Redis.from_url(server.url)
        try:
            r.delete(f"chute:{{{name}}}:items")  # the group with it: the server refuses
        finally:
            r.close()
        with pytest.raises(chute.ChuteError) as caught:
            await q.get(timeout=1)
        assert isinstance(caught.value, chute.QueueNotFound)
        assert _public(caught.value), repr(caught.value)
        with pytest.raises(chute.ChuteError) as caught:
            q.get_nowait()
        assert _public(caught.value), repr(caught.value)


async def test_a_pooled_connection_the_server_closed_is_replaced_before_a_call(server, name):
    # The server closes a connection while it idles in the pool (a server
    # timeout, CLIENT KILL): the next call that takes it sees it closed and
    # connects anew, so the call goes through instead of failing.
    from tests.conftest import wait_until

    async with chute.open(server.url, name) as q:
        await q.put("before")
        idle = list(q._backend._client()[0].connection_pool._available_connections)
        assert idle
        r = redis.Redis.from_url(server.url)
        try:
            for c in idle:
                host, port = c._writer.get_extra_info("sockname")[:2]
                r.client_kill(f"{host}:{port}")
        finally:
            r.close()
        await wait_until(lambda: all(c._reader is None or c._reader.at_eof() for c in idle))
        await q.put("after")
        assert [await q.get(timeout=10), await q.get(timeout=10)] == ["before", "after"]


async def test_a_pooled_connection_holding_an_unread_reply_is_replaced_before_a_call(server, name):
    # A connection goes back to the pool with a reply nobody read (code
    # that sent a command on it and never read the answer). The next call
    # that takes it must not read that stale reply as its own: it connects
    # anew, and both items come back as they were put.
    from tests.conftest import wait_until

    async with chute.open(server.url, name) as q:
        await q.put("before")
        pool = q._backend._client()[0].connection_pool
        idle = list(pool._available_connections)
        assert idle
        for c in idle:
            await c.send_command("PING")  # its +PONG is left unread
        await wait_until(lambda: all(c._reader is not None and c._reader._buffer for c in idle))
        await q.put("after")
        assert [await q.get(timeout=10), await q.get(timeout=10)] == ["before", "after"]
        assert q.qsize() == 0


@pytest.mark.parametrize("call", ["get", "reserve"])
async def test_a_server_lost_before_the_blocked_read_connects_is_a_chute_error(own_server, call):
    """The server stops right after a claim found nothing, before the wait
    on the server takes its connection: an explicit step, not a race."""
    async with chute.open(own_server.url, "lost", connect_timeout=2) as q:
        backend = q._backend
        script = backend._script

        async def claim_then_stop(name: str, args: list[Any], *more: Any) -> Any:
            reply = await script(name, args, *more)
            if name != "claim" or reply[0] != b"empty":
                return reply
            # Nothing there: a blocked read is next.
            own_server.stop()
            # ...and the pooled connection has seen it go: taking it reconnects.
            from tests.conftest import wait_until

            idle = list(backend._client()[0].connection_pool._available_connections)
            await wait_until(lambda: all(c._reader is None or c._reader.at_eof() for c in idle))
            return reply

        backend._script = claim_then_stop
        with pytest.raises(chute.ChuteError, match="unreachable") as caught:
            if call == "get":
                await q.get(timeout=10)
            else:
                await q.reserve(timeout=10)
        assert _public(caught.value)
        assert not isinstance(caught.value.__cause__, chute.ChuteError)
        with pytest.raises(chute.ChuteError, match="retrying in"):  # the backoff holds
            q.put_nowait("x")
        del backend._script
        own_server.start()
        await _retrying(lambda: q.put("back"))
        assert await q.get(timeout=10) == "back"


def test_a_server_lost_before_a_blocking_read_is_a_chute_error(own_server):
    with chute.open(own_server.url, "lost-sync", connect_timeout=2) as q:
        run = q._backend._script_sync

        def run_then_stop(script: str, args: list[Any], **kw: Any) -> Any:
            reply = run(script, args, **kw)
            if script == "claim" and reply[0] == b"empty":
                own_server.stop()  # before the blocking XREADGROUP
            return reply

        q._backend._script_sync = run_then_stop
        with pytest.raises(chute.ChuteError, match="unreachable") as caught:
            q.sync.get(timeout=10)
        assert _public(caught.value)
        with pytest.raises(chute.ChuteError, match="retrying in"):  # the backoff holds
            q.put_nowait("x")


async def test_the_event_loops_connections_are_bounded_the_same_way(silent_listener):
    # What a queue's async calls connect with, once open (say, after a restart
    # behind a proxy that accepts and never answers).
    import redis.asyncio as aioredis

    from chute._backends.redis_client import bounded, client_options

    client = bounded(
        aioredis.Redis.from_url(f"redis://127.0.0.1:{silent_listener}/0", **client_options(0.5))
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        with pytest.raises(redis.TimeoutError):
            await client.ping()
        assert loop.time() - t0 < 2.5
    finally:
        await client.aclose()
