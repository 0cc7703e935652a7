"""The PostgreSQL scenarios: chute's PostgreSQL queue next to pgqueuer and
procrastinate, and next to the same work written by hand in asyncpg SQL.

One server (the tests' own, ``tests/postgres_server.py``, with PostgreSQL's
durable defaults: a commit returns once its WAL is fsynced) is started on
loopback for the whole benchmark. Every run makes a new database and
installs the library's schema in it the way the library documents; then,
before the clock, it puts ``WARMUP`` items, runs ``ANALYZE`` while they
wait, and takes them out again. Then the clock runs from the first put to
the last item handled and acknowledged: one producer task and four
consumers in this process (how many consumers a job queue's worker makes
of four: in the notes), the ints 0..N-1, each checked to come out exactly
once.

Why ``ANALYZE`` then: a new table has no statistics, and a queue's table
analyzed when empty (after a warm-up that drained it) tells the planner it
stays empty. pgqueuer's batches were about 7x slower with the statistics of
an empty table here, and procrastinate's fetch is a sort of every waiting
job until the planner knows the table holds some (then an index walk). With
statistics taken while items wait, every library here was as fast as
without them, or faster.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .memory import _check, _split

BATCH = 100
CONSUMERS = 4
DEFAULT_ITEMS = 20_000
#: Items put, ``ANALYZE``\d while they wait, and taken, before the clock.
WARMUP = 500
#: Seconds a hand-written consumer sleeps when the table is empty.
POLL = 0.01
#: pgqueuer's ``batch_size`` (jobs a dequeue takes) with single puts: its default.
PGQUEUER_SINGLE_BATCH = 10
SINGLE, BATCHED = "single", "batched"
DATABASE = "chute_bench"

_server: Any = None


def server_url() -> str:
    """The benchmark's server (its ``postgres`` database), started on first use."""
    global _server
    if _server is None:
        from tests.postgres_server import PostgresServer

        _server = PostgresServer().start()
        atexit.register(_server.remove)
    return str(_server.url)


async def _new_database(url: str) -> str:
    """A new, empty database on the server of ``url`` (the last run's is
    dropped); its URL."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
    return f"{url.rpartition('/')[0]}/{DATABASE}"


async def _analyze(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


@dataclass(frozen=True)
class Way:
    name: str
    module: str
    note: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str

    def supports(self, way: Way) -> bool:
        return True


SCENARIOS = (
    Scenario(f"postgres, 1→{CONSUMERS}, put → get + ack", SINGLE),
    Scenario(f"postgres, 1→{CONSUMERS}, batches of {BATCH}", BATCHED),
)

SUBJECT = Way("chute", "chute")
PEERS = (
    Way(
        "asyncpg",
        "asyncpg",
        note=(
            "asyncpg: the same work by hand, no queue around it: a table (id bigserial, "
            "data bytea); the producer INSERTs a row per put (batched: one "
            f"`INSERT … SELECT unnest($1::bytea[])` of {BATCH}); {CONSUMERS} consumers, "
            "each on its own connection, `DELETE FROM t WHERE id = (SELECT id FROM t "
            "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING data` (batched: "
            f"`id = ANY(ARRAY(SELECT … LIMIT {BATCH} …))`), each statement its own "
            f"transaction, and sleep {POLL * 1e3:g} ms when the table is empty (faster "
            "here than 1 ms, and than LISTEN/NOTIFY with a notify per INSERT, which wakes "
            "all four for every put). No reservation, no redelivery, no bound."
        ),
    ),
    Way(
        "pgqueuer",
        "pgqueuer",
        note=(
            "pgqueuer: as its README says: the producer on its own connection, "
            "`await Queries(AsyncpgDriver(conn)).enqueue('job', payload)` (batched: one "
            f"`enqueue()` of lists of {BATCH}); one `PgQueuer(AsyncpgDriver(conn2))` with "
            "a no-op `@entrypoint`, `run(batch_size="
            f"{PGQUEUER_SINGLE_BATCH})` (its default; batched: `batch_size={BATCH}`), in "
            "this loop; its concurrency is its default, unlimited (`max_concurrent_tasks` "
            "must be at least twice the batch size). It acknowledges in batches (a "
            "buffer of done jobs): the clock stops once it has stopped, which writes the "
            "last. Its best shape here: the producer on the consumer's connection was "
            "slower (0.6-0.9x), so were four QueueManagers on four connections (a third "
            "as fast at single items, no faster at batches) and an asyncpg pool."
        ),
    ),
    Way(
        "procrastinate",
        "procrastinate",
        note=(
            "procrastinate: `App(connector=PsycopgConnector(...))` (its asyncio "
            "connector, psycopg 3's pool), `apply_schema_async()`, a no-op `async` task; "
            "`await task.defer_async(i=i)` (batched: `batch_defer_async()` of "
            f"{BATCH}); in this loop one `app.run_worker_async(concurrency={CONSUMERS})` "
            f"(batched: {CONSUMERS} workers with concurrency 1 — a worker fetches one job "
            "at a time, so these fetch four at once: about 1.3x faster with batches, "
            "slower with single puts), `delete_jobs='successful'` (a job's row goes once "
            "it is done, as the others' items do; its default, 'never', was no faster). "
            "It has no batched fetch: each job is a fetch and a finish, a transaction "
            "each."
        ),
    ),
)

NOTES = (
    "One server on loopback (tests/postgres_server.py: PostgreSQL's durable defaults, "
    "fsync and synchronous_commit on, the same for every library); one producer task "
    f"and {CONSUMERS} consumers in this process; items are the ints 0..N-1. Each run: "
    "a new database, the library's schema as it documents; "
    f"{WARMUP} items put, `ANALYZE` while they wait, and taken, before the clock (a "
    "queue's table analyzed empty made pgqueuer's batches about 7x slower); then the "
    "clock, from the first put to the last item handled and acknowledged.",
    f"chute: `await chute.open('postgresql://…', name)`; single: `await q.put(i)` and "
    f"{CONSUMERS} tasks `async with q.reserve() as job` (acknowledged on exit); batched: "
    f"`await q.put_batch()` of {BATCH} and `await q.get_batch({BATCH})` (a plain get, no "
    "reservation). The puts and acks that its tasks make at once go to the server in one "
    "statement (group commit: one transaction and one WAL flush; each put still returns "
    "only once stored). Every (Nx) is chute's rate / that column's.",
    "Everything in one process, as the Redis scenarios: a procrastinate worker in a "
    "child process of its own was no faster here (within the noise, single and batched).",
)


#: finish() -> the items each consumer got, once all are handled and acknowledged.
Finish = Callable[[], Awaitable[list[list[int]]]]


class Session:
    """One library on one new database, driven by ``_run``."""

    def __init__(self, url: str, kind: str) -> None:
        self.url, self.kind = url, kind

    async def open(self) -> None:
        """Connect and install the schema."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def produce(self, n: int) -> None:
        """Put the ints 0..n-1, one at a time or in batches as the kind says."""
        raise NotImplementedError

    async def start(self, n: int) -> Finish:
        """Start (and have ready) the consumers of ``n`` items."""
        raise NotImplementedError


async def _run(s: Session, n: int) -> tuple[list[list[int]], float]:
    """The warm-up, then ``n`` items timed: what the consumers got, and the seconds."""
    await s.open()
    try:
        await s.produce(WARMUP)
        await _analyze(s.url)
        await (await s.start(WARMUP))()
        finish = await s.start(n)
        t0 = time.perf_counter()
        _, outs = await asyncio.gather(s.produce(n), finish())
        return outs, time.perf_counter() - t0
    finally:
        await s.close()


def _batches(n: int) -> list[range]:
    return [range(lo, min(lo + BATCH, n)) for lo in range(0, n, BATCH)]


def _tasks(outs: list[list[int]], coros: list[Awaitable[None]]) -> Finish:
    tasks = asyncio.gather(*coros)

    async def finish() -> list[list[int]]:
        await tasks
        return outs

    return finish


# -- chute ---------------------------------------------------------------------------


class ChuteSession(Session):
    q: Any

    async def open(self) -> None:
        import chute

        self.q = await chute.open(self.url, "bench")

    async def close(self) -> None:
        await self.q.aclose()

    async def produce(self, n: int) -> None:
        q = self.q
        if self.kind == SINGLE:
            for i in range(n):
                await q.put(i)
        else:
            for batch in _batches(n):
                await q.put_batch(batch)

    async def start(self, n: int) -> Finish:
        q, single = self.q, self.kind == SINGLE
        outs: list[list[int]] = [[] for _ in range(CONSUMERS)]

        async def consume(count: int, out: list[int]) -> None:
            while len(out) < count:
                if single:
                    async with q.reserve() as job:
                        out.append(job.item)
                else:
                    # Never more than this consumer's share: the others must get theirs.
                    out.extend(await q.get_batch(min(BATCH, count - len(out))))

        return _tasks(
            outs, [consume(c, o) for c, o in zip(_split(n, CONSUMERS), outs, strict=True)]
        )


# -- asyncpg by hand ---------------------------------------------------------------------

_TABLE = "CREATE TABLE t (id bigserial PRIMARY KEY, data bytea NOT NULL)"
_INSERT = "INSERT INTO t (data) VALUES ($1)"
_INSERT_MANY = "INSERT INTO t (data) SELECT unnest($1::bytea[])"
_TAKE = (
    "DELETE FROM t WHERE id = "
    "(SELECT id FROM t ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING data"
)
#: ``= ANY(ARRAY(...))``, not ``IN (...)``: the planner may make an ``IN``
#: a join that runs the subquery again for each row, and a locking subquery
#: run again skips what it has just locked: with the statistics of an empty
#: table it did, and the consumers found nothing in a full table.
_TAKE_MANY = (
    "DELETE FROM t WHERE id = ANY(ARRAY("
    "SELECT id FROM t ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)) RETURNING data"
)


class AsyncpgSession(Session):
    conns: list[Any]

    async def open(self) -> None:
        import asyncpg

        self.conns = [await asyncpg.connect(self.url) for _ in range(1 + CONSUMERS)]
        await self.conns[0].execute(_TABLE)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()

    async def produce(self, n: int) -> None:
        conn = self.conns[0]
        if self.kind == SINGLE:
            for i in range(n):
                await conn.execute(_INSERT, b"%d" % i)
        else:
            for batch in _batches(n):
                await conn.execute(_INSERT_MANY, [b"%d" % i for i in batch])

    async def start(self, n: int) -> Finish:
        single = self.kind == SINGLE
        outs: list[list[int]] = [[] for _ in range(CONSUMERS)]

        async def consume(conn: Any, count: int, out: list[int]) -> None:
            while len(out) < count:
                if single:
                    rows = await conn.fetch(_TAKE)
                else:
                    rows = await conn.fetch(_TAKE_MANY, min(BATCH, count - len(out)))
                if rows:
                    out.extend(int(row[0]) for row in rows)
                else:
                    await asyncio.sleep(POLL)

        shares = zip(self.conns[1:], _split(n, CONSUMERS), outs, strict=True)
        return _tasks(outs, [consume(conn, c, o) for conn, c, o in shares])


# -- pgqueuer ------------------------------------------------------------------------


class PgqueuerSession(Session):
    conns: list[Any]

    async def open(self) -> None:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        # The producer's connection, then the consumer's.
        self.conns = [await asyncpg.connect(self.url) for _ in range(2)]
        self.queries = Queries(AsyncpgDriver(self.conns[0]))
        await self.queries.install()  # what `pgq install` does

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()

    async def produce(self, n: int) -> None:
        enqueue = self.queries.enqueue
        if self.kind == SINGLE:
            for i in range(n):
                await enqueue("job", b"%d" % i)
        else:
            for batch in _batches(n):
                size = len(batch)
                await enqueue(["job"] * size, [b"%d" % i for i in batch], [0] * size)

    async def start(self, n: int) -> Finish:
        from pgqueuer import PgQueuer
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.models import Job

        got: list[int] = []
        done = asyncio.Event()
        pgq = PgQueuer(AsyncpgDriver(self.conns[1]))

        @pgq.entrypoint("job")
        async def job(job: Job) -> None:
            assert job.payload is not None
            got.append(int(job.payload))
            if len(got) >= n:
                done.set()

        batch_size = BATCH if self.kind == BATCHED else PGQUEUER_SINGLE_BATCH
        running = asyncio.ensure_future(pgq.run(batch_size=batch_size))
        await asyncio.sleep(0.2)  # until it listens: before, it would find jobs by polling

        async def finish() -> list[list[int]]:
            try:
                await done.wait()
            finally:
                pgq.shutdown.set()  # it writes the acknowledgements it still holds
                await running
            return [got]

        return finish


# -- procrastinate --------------------------------------------------------------------


class ProcrastinateSession(Session):
    async def open(self) -> None:
        import procrastinate

        #: Workers, and the jobs each runs at once.
        self.workers, self.concurrency = (1, CONSUMERS) if self.kind == SINGLE else (CONSUMERS, 1)
        # A connection for each worker's fetches, its listener and each of its
        # jobs (their finish), and the producer's.
        size = self.workers * (self.concurrency + 2) + 1
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=self.url, min_size=size, max_size=size
            )
        )
        self.got: list[int] = []
        self.done = asyncio.Event()
        self.target = 0

        @self.app.task(name="job")
        async def job(i: int) -> None:
            self.got.append(i)
            if len(self.got) >= self.target:
                self.done.set()

        self.job = job
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def produce(self, n: int) -> None:
        job = self.job
        if self.kind == SINGLE:
            for i in range(n):
                await job.defer_async(i=i)
        else:
            for batch in _batches(n):
                kwargs: list[dict[str, Any]] = [{"i": i} for i in batch]
                await job.batch_defer_async(*kwargs)

    async def start(self, n: int) -> Finish:
        self.got, self.target = [], n
        self.done.clear()
        workers = asyncio.gather(
            *(
                self.app.run_worker_async(
                    name=f"worker{k}",
                    concurrency=self.concurrency,
                    delete_jobs="successful",
                    install_signal_handlers=False,
                )
                for k in range(self.workers)
            )
        )
        await asyncio.sleep(0.2)  # until they listen

        async def finish() -> list[list[int]]:
            try:
                await self.done.wait()
            finally:
                workers.cancel()  # a worker stops once its jobs are finished
                with contextlib.suppress(asyncio.CancelledError):
                    await workers
            return [self.got]

        return finish


SESSIONS: dict[str, type[Session]] = {
    "chute": ChuteSession,
    "asyncpg": AsyncpgSession,
    "pgqueuer": PgqueuerSession,
    "procrastinate": ProcrastinateSession,
}


async def run_once(sc: Scenario, way: Way, module: Any, n: int, timeout: float) -> float:
    url = await _new_database(server_url())
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            outs, elapsed = await _run(SESSIONS[way.name](url, sc.kind), n)
    except TimeoutError:
        if not deadline.expired():  # raised by the library itself
            raise
        raise TimeoutError(f"{n:,} items not through after {timeout:g} s") from None
    _check(outs, n, ordered=False)
    return n / elapsed
