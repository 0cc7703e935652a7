"""The PostgreSQL transport beyond the shared contract: a put inside the
caller's own transaction, errors that name the problem, the exact bound
under producers racing from several processes, what other processes do
(puts, shutdowns, leases), schemas, the blocking face and bad input.

Every test talks to a real server started on loopback by the tests: the
run's shared one, or a server of its own where it needs a password."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import multiprocessing as mp
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection
from typing import Any

import asyncpg
import pytest

import chute
from chute._backends.postgres import PostgresBackend
from chute._backends.postgres_sql import SCHEMA_VERSION
from chute._open import queue_names
from tests.conftest import wait_until
from tests.postgres_server import PostgresServer
from tests.redis_server import free_port

pytestmark = pytest.mark.timeout(120)

_SPAWN = mp.get_context("spawn")
_schemas = itertools.count()
_roles = itertools.count()


@pytest.fixture
def schema() -> str:
    """A schema name no other test uses (and that does not exist yet)."""
    return f"t{os.getpid()}_{next(_schemas)}"


# -- helpers ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _connection(url: str) -> AsyncIterator[Any]:
    """An asyncpg connection of the application's own."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        yield conn
    finally:
        await conn.close(timeout=10)


async def _afetch(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    async with _connection(url) as conn:
        return [tuple(row) for row in await conn.fetch(query, *args)]


def _fetch(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """``query``'s rows, from a test with no event loop."""
    return asyncio.run(_afetch(url, query, *args))


def _execute(url: str, script: str) -> None:
    async def run() -> None:
        async with _connection(url) as conn:
            await conn.execute(script)

    asyncio.run(run())


def _schema_exists(url: str, schema: str) -> bool:
    return bool(_fetch(url, "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema))


def _refused(url: str, name: str = "q", **options: Any) -> chute.ChuteError:
    """What opening a queue at ``url`` raises: always chute's own error."""
    with pytest.raises(chute.ChuteError) as caught, chute.open(url, name, **options):
        pass
    error = caught.value
    assert type(error).__module__.startswith("chute"), repr(error)
    return error


def _until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """``wait_until`` for a test with no event loop (the other side is a thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not reached within {timeout}s"
        threading.Event().wait(0.001)


async def _getters_waiting(q: Any, n: int) -> None:
    await wait_until(lambda: q.statistics().getters_waiting == n)


def _peer(url: str, name: str, options: dict[str, Any], calls: Connection) -> None:
    """Another process with the queue open: it runs each call it is sent (a
    method of ``q.sync``, else of ``q``) and answers what it returned or
    the name of what it raised."""
    with chute.open(url, name, **options) as q:
        calls.send("ready")
        while True:
            try:
                method, args = calls.recv()
            except EOFError:
                return
            face = q.sync if hasattr(q.sync, method) else q
            try:
                answer = ("returned", getattr(face, method)(*args))
            except Exception as exc:
                answer = ("raised", type(exc).__name__)
            calls.send(answer)


class Peer:
    """A client of the queue in another process, driven call by call."""

    def __init__(self, url: str, name: str, **options: Any) -> None:
        self._calls, theirs = _SPAWN.Pipe()
        self._process = _SPAWN.Process(target=_peer, args=(url, name, options, theirs), daemon=True)
        self._process.start()
        theirs.close()
        assert self._answer() == "ready"

    def _answer(self) -> Any:
        if not self._calls.poll(30):
            raise AssertionError("the other process did not answer within 30 s")
        return self._calls.recv()

    def call(self, method: str, *args: Any) -> tuple[str, Any]:
        self._calls.send((method, args))
        return self._answer()  # type: ignore[no-any-return]

    async def acall(self, method: str, *args: Any) -> tuple[str, Any]:
        return await asyncio.to_thread(self.call, method, *args)

    def close(self) -> None:
        self._calls.close()  # its next recv() ends it
        self._process.join(30)
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join(10)
        assert self._process.exitcode == 0

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a put inside the caller's transaction ------------------------------------------------


async def test_a_put_in_the_callers_transaction_is_there_once_it_commits_and_wakes_a_getter(
    url, name, monkeypatch
):
    # No idle look: only the commit's notification can wake the getter.
    monkeypatch.setattr(PostgresBackend, "idle_poll_interval", None)
    async with chute.open(url, name) as q, _connection(url) as conn:
        getter = asyncio.create_task(q.get())
        await _getters_waiting(q, 1)
        async with conn.transaction():
            await q.put({"order": 1}, connection=conn)
            assert await q.aqsize() == 0  # not there for anyone before the commit
        assert await asyncio.wait_for(getter, 10) == {"order": 1}
        s = await q.astatistics()
        assert (s.total_put, s.total_got, s.unfinished_tasks) == (1, 1, 1)


async def test_a_batch_in_the_callers_transaction_commits_with_the_callers_own_rows(url, name):
    async with (
        chute.open(url, name) as q,
        asyncpg.create_pool(url, min_size=1, max_size=1) as pool,
        pool.acquire() as conn,  # a connection of the application's pool
    ):
        await conn.execute("CREATE TEMP TABLE orders (id int)")
        async with conn.transaction():
            await conn.execute("INSERT INTO orders VALUES (1), (2)")
            await q.put_batch([{"order": 1}, {"order": 2}], connection=conn)
            await q.put("last", connection=conn)
        assert await conn.fetchval("SELECT count(*) FROM orders") == 2
        assert await q.get_batch(5, timeout=10) == [{"order": 1}, {"order": 2}, "last"]


async def test_a_rolled_back_transaction_stores_nothing_and_counts_nothing(url, name):
    async with chute.open(url, name, maxsize=10) as q, _connection(url) as conn:
        await q.put("before")
        before = await q.astatistics()
        with pytest.raises(KeyError):
            async with conn.transaction():
                await q.put("rolled back", connection=conn)
                await q.put_batch(["b1", "b2"], connection=conn)
                raise KeyError("the caller's own failure")
        after = await q.astatistics()
        assert (after.size, after.total_put, after.unfinished_tasks) == (1, 1, 1)
        # All the same but the age of the oldest ready item ("before"), which grows.
        assert before.oldest_ready_age is not None
        assert after.oldest_ready_age is not None
        assert before.oldest_ready_age <= after.oldest_ready_age
        assert after == dataclasses.replace(before, oldest_ready_age=after.oldest_ready_age)
        assert await q.get_batch(10, timeout=10) == ["before"]


async def test_a_keyed_put_in_the_callers_transaction_holds_its_key_only_if_it_commits(url, name):
    # The job of an order, keyed by the order: a transaction retried after a
    # rollback puts it again; one that committed cannot put it twice.
    async with chute.open(url, name) as q, _connection(url) as conn:
        with pytest.raises(KeyError):
            async with conn.transaction():
                assert await q.put("order 7", key="order-7", connection=conn) is True
                raise KeyError("the caller's own failure")
        async with conn.transaction():
            assert await q.put("order 7", key="order-7", connection=conn, delay=0.01) is True
            assert await q.put("order 7 twice", key="order-7", connection=conn) is False
        assert await q.put("order 7 again", key="order-7") is False
        assert await q.get_batch(10, timeout=10) == ["order 7"]


@pytest.mark.parametrize("refusal", ["shut down", "full", "batch too big", "cannot encode"])
async def test_a_put_refused_inside_the_callers_transaction_leaves_it_usable(url, name, refusal):
    """The caller catches chute's error and goes on: its own rows commit,
    and nothing of the queue's is stored."""
    async with chute.open(url, name, maxsize=2) as q, _connection(url) as conn:
        await conn.execute("CREATE TEMP TABLE orders (id int)")
        items: list[Any] = ["x"]
        error: type[BaseException]
        if refusal == "shut down":
            q.shutdown()
            error = chute.QueueShutDown
        elif refusal == "full":
            await q.put_batch(["a", "b"])
            error = TimeoutError
        elif refusal == "batch too big":
            items, error = [1, 2, 3], ValueError
        else:
            items, error = [object()], TypeError
        before = await q.astatistics()
        async with conn.transaction():
            await conn.execute("INSERT INTO orders VALUES (1)")
            with pytest.raises(error) as caught:
                await q.put_batch(items, timeout=0.05, connection=conn)
            await conn.execute("INSERT INTO orders VALUES (2)")  # the transaction goes on
        assert await conn.fetchval("SELECT count(*) FROM orders") == 2
        if refusal == "shut down":
            assert caught.value.items == items  # type: ignore[attr-defined]
        after = await q.astatistics()
        assert (after.size, after.total_put, after.unfinished_tasks) == (
            before.size,
            before.total_put,
            before.unfinished_tasks,
        )


def _put_nowait(q: Any, item: Any) -> str:
    try:
        q.put_nowait(item)
    except chute.QueueFull:
        return "full"
    return "stored"


async def _put(q: Any, item: Any, timeout: float) -> str:
    try:
        await q.put(item, timeout=timeout)
    except TimeoutError:
        return "timed out"
    return "stored"


@pytest.mark.loops("asyncio")  # the server's locks, not the loop: one kind is enough
async def test_an_open_transaction_that_put_an_item_does_not_stall_other_producers(url, name):
    """A put_nowait never waits, and a put's timeout holds, even while
    another client's transaction that put into the bounded queue is open."""
    async with chute.open(url, name, maxsize=5) as q, _connection(url) as conn:
        others: list[asyncio.Task[str]] = []
        try:
            async with conn.transaction():
                await q.put("in the transaction", connection=conn)
                others += [
                    asyncio.create_task(asyncio.to_thread(_put_nowait, q, "now")),
                    asyncio.create_task(_put(q, "soon", timeout=0.2)),
                ]
                done, _ = await asyncio.wait(others, timeout=10)
        finally:
            await asyncio.wait(others, timeout=10)  # before the queue closes
        assert len(done) == 2, "another producer waited for the transaction to end"
        assert q.qsize() <= 5


async def test_a_put_in_the_callers_transaction_waits_for_room_made_by_another_client(
    url, name, monkeypatch
):
    # The full put registers its waiting on chute's own connection: made in
    # the caller's transaction, its lock would hold every other change's
    # notification until that transaction ended.
    monkeypatch.setattr(PostgresBackend, "poll_interval", None)  # woken by the server only
    async with (
        chute.open(url, name, maxsize=1) as q,
        chute.open("postgres://" + url.removeprefix("postgresql://"), name) as other,
        _connection(url) as conn,
    ):
        await q.put("first")
        async with conn.transaction():
            putter = asyncio.create_task(q.put("second", connection=conn))
            await wait_until(lambda: q.statistics().putters_waiting == 1)
            assert await other.get(timeout=10) == "first"  # another client frees the slot
            await asyncio.wait_for(putter, 10)
        assert await other.get(timeout=10) == "second"


async def test_a_connection_not_in_a_transaction_is_refused_and_stores_nothing(url, name):
    async with chute.open(url, name) as q, _connection(url) as conn:
        with pytest.raises(ValueError, match="not in a transaction"):
            await q.put("x", connection=conn)
        with pytest.raises(ValueError, match="not in a transaction"):
            await q.put_batch(["x", "y"], connection=conn)
        s = await q.astatistics()
        assert (s.size, s.total_put, s.unfinished_tasks) == (0, 0, 0)


async def test_a_connection_that_is_not_asyncpgs_is_refused_and_stores_nothing(url, name):
    async with chute.open(url, name) as q:
        with pytest.raises(TypeError, match="must be an asyncpg connection, not object"):
            await q.put("x", connection=object())
        with pytest.raises(TypeError, match="must be an asyncpg connection, not str"):
            await q.put_batch(["x"], connection=url)  # the URL is not a connection
        assert (await q.astatistics()).total_put == 0


# -- errors that name the problem ---------------------------------------------------------


def test_a_server_that_is_not_there_is_named():
    port = free_port()  # nothing listens here
    error = _refused(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2)
    assert str(error).startswith(f"PostgreSQL at 127.0.0.1:{port} cannot be reached")


def test_a_server_that_never_answers_is_bounded_by_connect_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts (the kernel does), never answers
        port = listener.getsockname()[1]
        error = _refused(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=0.3)
    assert str(error).startswith(f"PostgreSQL at 127.0.0.1:{port} cannot be reached")


def test_a_wrong_password_is_named_and_nothing_is_created():
    s = PostgresServer(password="s3cret").start()
    try:
        wrong = s.url.replace("s3cret", "guess")
        error = _refused(wrong, "refused")
        assert f"PostgreSQL at 127.0.0.1:{s.port} refused user 'postgres'" in str(error)
        assert "guess" not in str(error)
        assert "s3cret" not in str(error)
        assert not _schema_exists(s.url, "chute")
        with chute.open(s.url, "q") as q:  # the right one works
            q.sync.put("in")
            assert q.sync.get(timeout=10) == "in"
        assert queue_names(s.url) == ["q"]
    finally:
        s.remove()


def test_a_missing_database_is_named(server):
    error = _refused(f"postgresql://postgres@127.0.0.1:{server.port}/nosuchdb")
    assert f"PostgreSQL at 127.0.0.1:{server.port} has no database 'nosuchdb'" in str(error)
    assert _fetch(server.url, "SELECT 1 FROM pg_database WHERE datname = 'nosuchdb'") == []


def test_a_user_who_may_not_create_the_schema_is_told_how_to_fix_it(server, schema, name):
    role = f"app_{os.getpid()}_{next(_roles)}"
    _execute(server.url, f"CREATE ROLE {role} LOGIN")  # no CREATE on the database
    as_role = server.url.replace("postgres@", f"{role}@", 1)
    try:
        error = _refused(as_role, name, schema=schema)
        message = str(error)
        assert f"user {role!r} may not create or use chute's schema {schema!r}" in message
        assert "permission denied" in message
        assert f"CREATE SCHEMA {schema} AUTHORIZATION" in message
        assert not _schema_exists(server.url, schema)
        # What the message advises works.
        _execute(server.url, f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
        with chute.open(as_role, name, schema=schema) as q:
            q.sync.put("in")
            assert q.sync.get(timeout=10) == "in"
    finally:
        _execute(server.url, f"DROP SCHEMA IF EXISTS {schema} CASCADE; DROP ROLE {role}")


@pytest.mark.parametrize("table", ["chute_item", "chute_version"])
def test_a_table_chute_did_not_make_is_refused_and_left_alone(server, schema, table):
    _execute(
        server.url,
        f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.{table} (a int); "
        f"INSERT INTO {schema}.{table} VALUES (7)",
    )
    error = _refused(server.url, schema=schema)
    message = str(error)
    assert f"{schema}.{table}" in message
    assert "chute did not make" in message or "not made by chute" in message
    assert "choose another schema=" in message
    assert _fetch(server.url, f"SELECT a FROM {schema}.{table}") == [(7,)]
    tables = "SELECT tablename FROM pg_tables WHERE schemaname = $1"
    assert _fetch(server.url, tables, schema) == [(table,)]


def test_a_schema_made_by_a_newer_chute_is_refused(server, schema, name):
    with chute.open(server.url, name, schema=schema):
        pass
    _execute(server.url, f"UPDATE {schema}.chute_version SET version = 99")
    error = _refused(server.url, f"{name}-new", schema=schema)
    assert f"chute's schema {schema!r}" in str(error)
    assert "made by a newer chute (version 99)" in str(error)
    assert str(error).endswith("upgrade chute")
    assert _fetch(server.url, f"SELECT version FROM {schema}.chute_version") == [(99,)]
    assert queue_names(server.url, schema=schema) == [name]  # nothing added


def test_a_schema_made_by_an_older_chute_is_upgraded_with_its_items_kept(server, schema, name):
    with chute.open(server.url, name, schema=schema) as q:
        q.sync.put("kept")
    # As version 1 left it: no registrations of waiting clients, no
    # priorities or keys, functions of other arguments and results.
    s = schema
    _execute(
        server.url,
        f"""
        DROP TABLE {s}.chute_listener;
        DROP INDEX {s}.chute_item_key, {s}.chute_item_order, {s}.chute_item_scheduled;
        ALTER TABLE {s}.chute_item DROP COLUMN priority, DROP COLUMN key;
        CREATE INDEX chute_item_ready ON {s}.chute_item (queue, id) WHERE visible_at IS NULL;
        DROP FUNCTION {s}.chute_put(int, bytea[], double precision, int, text, text, bigint, text);
        DROP TABLE {s}.chute_mark;
        CREATE FUNCTION {s}.chute_put(q int, records bytea[], sender text) RETURNS bigint[]
            LANGUAGE sql AS 'SELECT NULL::bigint[]';
        DROP FUNCTION {s}.chute_claim(int, int, double precision, text);
        CREATE FUNCTION {s}.chute_claim(q int, n int, lease double precision, sender text)
            RETURNS TABLE (id bigint, data bytea, deliveries int, token bigint,
                           due double precision)
            LANGUAGE sql AS 'SELECT NULL::bigint, NULL::bytea, 0, 0::bigint, NULL::float8';
        UPDATE {s}.chute_version SET version = 1
        """,
    )
    with chute.open(server.url, name, schema=schema) as q:
        assert _fetch(server.url, f"SELECT max(version) FROM {schema}.chute_version") == [
            (SCHEMA_VERSION,)
        ]
        assert q.sync.get(timeout=10) == "kept"
        q.sync.put("after")
        assert q.sync.put("keyed", key="k") is True
        q.sync.put("urgent", priority=-1)
        assert q.sync.get_batch(3, timeout=10) == ["urgent", "after", "keyed"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("postgresql://", "no host"),
        ("postgresql:///postgres", "no host"),
        ("postgresql://127.0.0.1:5432", "no database"),
        ("postgres://postgres@127.0.0.1/", "no database"),
        ("postgresql://127.0.0.1:notaport/postgres", "port"),
        ("postgresql://127.0.0.1:99999/postgres", "port"),
        ("postgresql://127.0.0.1/postgres#frag", "fragment"),
    ],
)
def test_a_wrong_url_is_refused_at_the_call(bad, message):
    with pytest.raises(ValueError, match=message):
        chute.open(bad, "q")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"connect_timeout": -1}, "connect_timeout"),
        ({"connect_timeout": float("nan")}, "connect_timeout"),
        ({"schema": ""}, "schema"),
        ({"visibility_timeout": 0}, "visibility_timeout"),
    ],
)
async def test_a_wrong_option_is_refused_before_anything_is_made(url, schema, options, message):
    options = {"schema": schema, **options}
    with pytest.raises(ValueError, match=message):
        await chute.open(url, "q", **options)
    if options["schema"]:
        assert not await asyncio.to_thread(_schema_exists, url, options["schema"])


# -- looking creates nothing -----------------------------------------------------------------


async def test_create_false_names_the_queues_there_and_creates_nothing(server, name, schema):
    url = server.url
    with pytest.raises(chute.QueueNotFound) as caught:
        await chute.open(url, name, create=False, schema=schema)
    assert str(caught.value) == (
        f"no queue {name!r} in 127.0.0.1:{server.port}/postgres (schema {schema!r}); "
        "no queues there"
    )
    assert await asyncio.to_thread(queue_names, url, schema=schema) == []
    assert not await asyncio.to_thread(_schema_exists, url, schema)
    async with (
        chute.open(url, "thumbnails", schema=schema),
        chute.open(url, "emails", schema=schema),
    ):
        pass
    with pytest.raises(chute.QueueNotFound, match=r"; queues there: emails, thumbnails$"):
        await chute.open(url, name, create=False, schema=schema)
    assert await asyncio.to_thread(queue_names, url, schema=schema) == ["emails", "thumbnails"]
    async with chute.open(url, "emails", create=False, schema=schema) as q:  # one that is there
        await q.put("x")
        assert await q.aqsize() == 1


# -- the exact bound, producers racing from several processes ---------------------------------


def _fill(url: str, name: str, threads: int, start: Any, stored: Any) -> None:
    """Put until the queue is full, from ``threads`` threads released by
    ``start`` together with every other process's; report how many it stored."""
    with chute.open(url, name) as q:
        counts: list[int] = []

        def fill() -> None:
            q.qsize()  # connected before the race
            start.wait(30)
            n = 0
            while True:
                try:
                    q.put_nowait("x")
                except chute.QueueFull:
                    break
                n += 1
            counts.append(n)

        workers = [threading.Thread(target=fill) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        stored.put(sum(counts) if len(counts) == threads else None)


def test_producers_racing_from_several_processes_store_exactly_maxsize(url, name):
    processes, threads, maxsize = 4, 4, 5
    with chute.open(url, name, maxsize=maxsize) as q:
        start = _SPAWN.Barrier(processes * threads)  # every thread of every process at once
        stored = _SPAWN.Queue()
        producers = [
            _SPAWN.Process(target=_fill, args=(url, name, threads, start, stored))
            for _ in range(processes)
        ]
        for p in producers:
            p.start()
        try:
            counts = [stored.get(timeout=60) for _ in producers]
        finally:
            for p in producers:
                p.join(30)
        assert None not in counts
        assert sum(counts) == maxsize
        s = q.statistics()
        assert (s.size, s.total_put, s.peak_size) == (maxsize, maxsize, maxsize)


def _wait_to_put(url: str, name: str, tasks: int, outcomes: Any) -> None:
    """``tasks`` puts blocked on the full queue; report each one's outcome."""

    async def main() -> None:
        async with chute.open(url, name) as q:

            async def put(i: int) -> None:
                try:
                    await q.put(i, timeout=60)
                except chute.QueueShutDown:
                    outcomes.put("shut down")
                else:
                    outcomes.put("in")

            putters = [asyncio.create_task(put(i)) for i in range(tasks)]
            await wait_until(lambda: q.statistics().putters_waiting == tasks)
            outcomes.put("waiting")
            await asyncio.gather(*putters)

    asyncio.run(main())


def test_one_freed_slot_lets_exactly_one_blocked_producer_of_any_process_in(url, name):
    processes, tasks = 3, 2
    with chute.open(url, name, maxsize=3) as q:
        q.sync.put_batch(["a", "b", "c"])
        outcomes = _SPAWN.Queue()
        producers = [
            _SPAWN.Process(target=_wait_to_put, args=(url, name, tasks, outcomes))
            for _ in range(processes)
        ]
        for p in producers:
            p.start()
        try:
            assert [outcomes.get(timeout=60) for _ in producers] == ["waiting"] * processes
            assert q.sync.get(timeout=10) == "a"  # one slot frees
            assert outcomes.get(timeout=30) == "in"
            assert q.qsize() == 3  # full again: the others stay blocked
            q.shutdown()  # ends their waiting
            rest = [outcomes.get(timeout=30) for _ in range(processes * tasks - 1)]
        finally:
            for p in producers:
                p.join(30)
        assert rest == ["shut down"] * (processes * tasks - 1)
        s = q.statistics()
        assert (s.size, s.total_put) == (3, 4)
        assert [p.exitcode for p in producers] == [0] * processes


# -- waking: who is notified ----------------------------------------------------------------


async def _spy(conn: Any, schema: str) -> list[str]:
    """The kinds (g, p, j, e) of the notifications ``conn`` hears on the
    schema's channel, as they arrive (in the order their changes committed)."""
    heard: list[str] = []
    await conn.add_listener(f"chute.{schema}", lambda *args: heard.append(args[3].split()[1]))
    return heard


async def test_a_client_whose_waiters_no_one_else_serves_sends_no_notification(url, name, schema):
    # A producer and its consumers in one process ring each other in the
    # process: the server is not asked to notify anyone.
    async with _connection(url) as spy, chute.open(url, name, schema=schema) as q:
        heard = await _spy(spy, schema)
        getter = asyncio.create_task(q.get(timeout=30))
        await _getters_waiting(q, 1)
        await q.put("here")
        assert await asyncio.wait_for(getter, 10) == "here"
        q.task_done()
        await q.put("job")
        async with q.reserve(timeout=10) as job:
            assert job.item == "job"
        await q.join()
        q.shutdown()  # a change of state notifies always: after every change above
        await wait_until(lambda: heard, timeout=10)
        assert heard == ["e"]


async def test_a_client_that_waits_is_notified_of_another_clients_changes(
    url, name, schema, monkeypatch
):
    # No idle look: only the server's notification can wake the getter.
    monkeypatch.setattr(PostgresBackend, "idle_poll_interval", None)
    async with (
        _connection(url) as spy,
        chute.open(url, name, schema=schema) as waits,
        chute.open("postgres://" + url.removeprefix("postgresql://"), name, schema=schema) as puts,
    ):
        heard = await _spy(spy, schema)
        getter = asyncio.create_task(waits.get(timeout=30))
        await _getters_waiting(waits, 1)
        await puts.put("from another client")
        assert await asyncio.wait_for(getter, 10) == "from another client"
        # The spy's connection hears the notification on its own time: the
        # getter's may have heard it first.
        await wait_until(lambda: heard)
        assert heard[:1] == ["g"]


async def test_a_put_committed_while_a_getter_registers_is_not_missed(
    url, name, schema, monkeypatch
):
    # The race: a put looked at the registrations (none) and has not yet
    # committed when the getter, having found nothing, registers. The
    # registration waits for the put's commit, and the getter's next look
    # finds the item; without that order it would sleep on it for ever.
    monkeypatch.setattr(PostgresBackend, "idle_poll_interval", None)
    async with (
        _connection(url) as producer,
        _connection(url) as watcher,
        chute.open(url, name, schema=schema) as q,
    ):
        queue_id = q._backend._id
        async with producer.transaction():
            stored = await producer.fetchval(
                f'SELECT "{schema}".chute_put($1, $2, NULL, 0, NULL, NULL, NULL, $3)',
                queue_id,
                [b'"raced"'],
                "elsewhere",
            )
            assert stored is not None
            getter = asyncio.create_task(q.get(timeout=30))
            await _until_a_call_waits_on_a_lock(watcher, schema)  # the registration
        assert await asyncio.wait_for(getter, 10) == "raced"


# -- other processes ------------------------------------------------------------------------


async def test_a_put_a_shutdown_and_a_reopen_from_another_process_reach_a_blocked_get(
    url, name, monkeypatch
):
    # No idle look: only the server's notification (LISTEN) can wake a getter.
    monkeypatch.setattr(PostgresBackend, "idle_poll_interval", None)
    async with chute.open(url, name) as q:
        peer = await asyncio.to_thread(Peer, url, name)
        try:
            getter = asyncio.create_task(q.get())
            await _getters_waiting(q, 1)
            assert await peer.acall("put", "from afar") == ("returned", None)
            assert await asyncio.wait_for(getter, 10) == "from afar"

            getter = asyncio.create_task(q.get())
            await _getters_waiting(q, 1)
            assert await peer.acall("shutdown") == ("returned", [])
            with pytest.raises(chute.QueueShutDown):
                await asyncio.wait_for(getter, 10)
            with pytest.raises(chute.QueueShutDown):
                await q.put("refused")

            assert await peer.acall("reopen") == ("returned", None)
            assert not q.is_shutdown
            getter = asyncio.create_task(q.get())
            await _getters_waiting(q, 1)
            assert await peer.acall("put", "after the reopen") == ("returned", None)
            assert await asyncio.wait_for(getter, 10) == "after the reopen"
        finally:
            await asyncio.to_thread(peer.close)


async def test_a_lease_that_ran_out_fences_off_its_first_holder(url, name):
    async with (
        chute.open(url, name, visibility_timeout=0.3) as a,
        chute.open(url, name, visibility_timeout=30) as b,
    ):
        await a.put("job")
        first = await a.reserve(timeout=10)
        second = await b.reserve(timeout=10)  # returns once the first lease ran out
        assert (first.item, first.deliveries) == ("job", 1)
        assert (second.item, second.deliveries) == ("job", 2)
        with pytest.raises(chute.ChuteError, match="lease ran out") as caught:
            await first.extend()
        assert type(caught.value).__module__.startswith("chute")
        with pytest.raises(chute.ChuteError, match="lease ran out") as caught:
            await first.aack()
        assert type(caught.value).__module__.startswith("chute")
        await second.aack()
        assert second.outcome == "acked"
        s = await b.astatistics()
        assert (s.size, s.in_flight, s.unfinished_tasks, s.dead_lettered) == (0, 0, 0, 0)
        with pytest.raises(chute.QueueEmpty):
            b.get_nowait()
        assert b.dead_letters() == []


# -- schemas ---------------------------------------------------------------------------------


async def test_the_same_name_in_two_schemas_is_two_queues(url, name, schema):
    async with chute.open(url, name) as default, chute.open(url, name, schema=schema) as other:
        await default.put("the default schema's")
        await other.put_batch(["the other schema's", 2])
        assert (await default.aqsize(), await other.aqsize()) == (1, 2)
        assert await other.get_batch(5, timeout=10) == ["the other schema's", 2]
        assert await default.get(timeout=10) == "the default schema's"
    async with chute.open(url, f"{name}-only-there", schema=schema):
        pass
    listed = await asyncio.to_thread(queue_names, url)
    assert name in listed
    assert f"{name}-only-there" not in listed
    assert listed == sorted(listed)
    there = await asyncio.to_thread(queue_names, url, schema=schema)
    assert there == [name, f"{name}-only-there"]


# -- the blocking face ---------------------------------------------------------------------------


def test_the_blocking_face_in_plain_threads_with_no_event_loop(url, name):
    with chute.open(url, name, maxsize=2) as q:
        got: list[Any] = []
        consumer = threading.Thread(
            target=lambda: got.extend(q.sync.get(timeout=10) for _ in range(3))
        )
        consumer.start()
        try:
            _until(lambda: q.statistics().getters_waiting == 1)  # blocked in its get
            q.sync.put("a", timeout=10)
            q.sync.put_batch(["b", "c"], timeout=10)
        finally:
            consumer.join(20)
        assert got == ["a", "b", "c"]
        q.sync.put_batch([1, 2], timeout=10)
        with pytest.raises(chute.QueueFull):
            q.sync.put(3, timeout=0.05)
        assert q.sync.get_batch(5, timeout=10) == [1, 2]
        with pytest.raises(chute.QueueEmpty):
            q.sync.get(timeout=0.05)


def test_the_blocking_face_in_another_process(url, name):
    with chute.open(url, name, maxsize=1) as q, Peer(url, name) as peer:
        assert peer.call("put", "from the peer", True, 10) == ("returned", None)
        assert q.sync.get(timeout=10) == "from the peer"
        assert peer.call("get", True, 0.05) == ("raised", "QueueEmpty")
        q.sync.put("for the peer", timeout=10)
        assert peer.call("get", True, 10) == ("returned", "for the peer")
        q.sync.put("fills it", timeout=10)
        assert peer.call("put", "no room", True, 0.05) == ("raised", "QueueFull")
        assert peer.call("qsize") == ("returned", 1)


# -- bad input leaves the queue as it was ----------------------------------------------------------


async def test_an_item_the_codec_cannot_encode_stores_nothing(url, name):
    async with chute.open(url, name) as q:
        await q.put("kept")
        with pytest.raises(TypeError, match="the json codec cannot encode object item"):
            await q.put(object())
        with pytest.raises(TypeError, match="the json codec cannot encode"):
            await q.put_batch(["fine", object()])  # all or nothing
        with pytest.raises(TypeError, match="the json codec cannot encode"):
            q.put_nowait({"nested": object()})
        s = await q.astatistics()
        assert (s.size, s.total_put, s.unfinished_tasks) == (1, 1, 1)
        assert await q.get_batch(10, timeout=10) == ["kept"]


async def test_a_negative_maxsize_is_refused_and_changes_nothing(url, name):
    with pytest.raises(ValueError, match="maxsize must be >= 0"):
        await chute.open(url, name, maxsize=-1)
    assert name not in await asyncio.to_thread(queue_names, url)  # nothing created
    async with chute.open(url, name, maxsize=3) as q:
        with pytest.raises(ValueError, match="maxsize must be >= 0"):
            q.maxsize = -1
        with pytest.raises(ValueError, match="maxsize must be >= 0"):
            q.configure(maxsize=-1)
        with pytest.raises(ValueError, match="maxsize must be >= 0"):
            await chute.open(url, name, maxsize=-1)
        assert q.maxsize == 3


async def test_a_batch_that_can_never_fit_is_refused_and_stores_nothing(url, name):
    async with chute.open(url, name, maxsize=2) as q:
        await q.put("one")
        never = "a batch of 3 items can never fit a queue of maxsize 2"
        with pytest.raises(ValueError, match=never):
            await q.put_batch([1, 2, 3])
        with pytest.raises(ValueError, match=never):
            await asyncio.to_thread(q.sync.put_batch, [1, 2, 3], True, 1)
        s = await q.astatistics()
        assert (s.size, s.total_put, s.unfinished_tasks) == (1, 1, 1)
        await q.put("two")  # what fits still goes in
        assert await q.get_batch(5, timeout=10) == ["one", "two"]


async def test_a_closed_queue_refuses_every_call_and_its_items_stay(url, name):
    q = await chute.open(url, name)
    await q.put("stays")
    await q.aclose()
    await q.aclose()  # again: nothing happens
    calls: list[Callable[[], Any]] = [
        lambda: q.put("x"),
        lambda: q.put_batch(["x"]),
        lambda: q.get(timeout=1),
        lambda: q.get_batch(2, timeout=1),
        lambda: q.reserve(timeout=1),
        q.join,
        q.astatistics,
    ]
    for call in calls:
        with pytest.raises(chute.ChuteError, match="was closed"):
            await call()
    for sync_call in (q.qsize, lambda: q.put_nowait("x"), q.get_nowait, q.task_done, q.shutdown):
        with pytest.raises(chute.ChuteError, match="was closed"):
            sync_call()
    async with chute.open(url, name) as again:
        assert await again.get_batch(5, timeout=10) == ["stays"]


async def _until_a_call_waits_on_a_lock(conn: Any, schema: str) -> None:
    """Until one of chute's calls on ``schema`` waits for a lock, as the server sees it."""
    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chute' "
        "AND wait_event_type = 'Lock' AND strpos(query, $1) > 0"
    )
    deadline = time.monotonic() + 10
    while not await conn.fetchval(waiting, f'"{schema}".'):
        assert time.monotonic() < deadline, "no call of chute's waited on the lock"
        await asyncio.sleep(0.001)


@pytest.mark.loops("asyncio")  # about the store's own loop: one kind is enough
async def test_closing_the_queue_ends_a_blocking_call_another_thread_has_in_flight(
    url, name, schema
):
    q = await chute.open(url, name, schema=schema)
    ended = threading.Event()
    outcome: list[Any] = []

    def count() -> None:
        try:
            outcome.append(q.qsize())
        except chute.ChuteError as exc:
            outcome.append(exc)
        ended.set()

    async with _connection(url) as conn, conn.transaction():
        await conn.execute(f"LOCK TABLE {schema}.chute_item")  # holds the thread's call
        # A daemon thread: if its call never returns, the run still ends.
        threading.Thread(target=count, daemon=True).start()
        await _until_a_call_waits_on_a_lock(conn, schema)
        await q.aclose()
    # The lock is gone: the call can be answered now (or refused as closed).
    assert await asyncio.to_thread(ended.wait, 10), "the thread's call never returned"
    assert outcome == [0] or isinstance(outcome[0], chute.ChuteError)


async def test_aclose_ends_a_get_blocked_in_another_task(url, name):
    q = await chute.open(url, name)
    try:
        getter = asyncio.create_task(q.get())
        await _getters_waiting(q, 1)
    finally:
        await q.aclose()
    with pytest.raises(chute.ChuteError, match="was closed"):
        await asyncio.wait_for(getter, 10)
