"""The PostgreSQL transport when things die: a consumer killed holding
leases, producers and consumers killed at random, the server stopped or
crashed and started again, and every connection of the application cut
under a waiting get.

Every test talks to a real server started on loopback by the tests; those
that stop, kill or cut a server start their own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import pytest

import chute
from chute._durable.waiting import EVERYONE
from tests.conftest import calls_answered, wait_until
from tests.postgres_server import PostgresServer

pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def own_server(*, fast: bool) -> Iterator[PostgresServer]:
    """A server of this test's own (``fast``: see ``PostgresServer``)."""
    server = PostgresServer(fast=fast).start()
    try:
        yield server
    finally:
        server.remove()


def other_client(url: str) -> str:
    """The same database under another spelling: chute opens a second store
    for it (its own connections, listener and sender), as another process would."""
    assert url.startswith("postgresql://")
    return "postgres://" + url.removeprefix("postgresql://")


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    """``wait_until`` for a condition that takes a round trip to the server."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        await asyncio.sleep(0.01)


async def waiting_getters(q: Any, n: int) -> None:
    """Until ``n`` gets of this process wait on ``q``, their looks answered."""

    async def counted() -> bool:
        return (await q.astatistics()).getters_waiting == n

    await until(counted)
    await calls_answered(q)


async def stored_counters(url: str, name: str) -> dict[str, int]:
    """What the store itself holds for queue ``name``: its rows, and the
    counters that ``unfinished_tasks`` is made of (which it shows clamped at
    0, so that an item acknowledged twice would not show there)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM chute.chute_item i WHERE i.queue = q.id) AS rows,
                   (SELECT count(*) FROM chute.chute_dead d WHERE d.queue = q.id) AS dead,
                   (SELECT coalesce(sum(put), 0) FROM chute.chute_count c
                    WHERE c.queue = q.id) AS put,
                   (SELECT coalesce(sum(added), 0) FROM chute.chute_count c
                    WHERE c.queue = q.id) AS added,
                   (SELECT coalesce(sum(done), 0) FROM chute.chute_count c
                    WHERE c.queue = q.id) AS done
            FROM chute.chute_queue q WHERE q.name = $1
            """,
            name,
        )
    finally:
        await conn.close()
    assert row is not None, f"no queue {name!r}"
    return {key: int(value) for key, value in row.items()}


# -- a consumer killed holding leases --------------------------------------------------

#: ``url name k``: reserve ``k`` items, say which (one JSON line), and wait
#: to be killed, holding their leases.
HOLDER = textwrap.dedent(
    """
    import asyncio, json, sys
    import chute

    url, name, k = sys.argv[1], sys.argv[2], int(sys.argv[3])

    async def main():
        async with chute.open(url, name, visibility_timeout=0.5) as q:
            jobs = [await q.reserve(timeout=30) for _ in range(k)]
            print(json.dumps([job.item for job in jobs]), flush=True)
            await asyncio.to_thread(sys.stdin.read)  # killed here, holding them

    asyncio.run(main())
    """
)


async def test_a_consumer_killed_holding_leases_loses_nothing_and_acks_nothing_twice(url, name):
    async with chute.open(url, name, visibility_timeout=0.5) as q:
        await q.put_batch(["a", "b", "c", "d", "e"])
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", HOLDER, url, name, "3",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        killed = False
        try:
            line = await asyncio.wait_for(holder.stdout.readline(), 30)  # type: ignore[union-attr]
            assert json.loads(line) == ["a", "b", "c"], line
            holder.send_signal(signal.SIGKILL)
            killed = True
        finally:
            # Not a second kill after the first: subprocess's send_signal
            # polls the child first, and a poll that finds it dead reaps
            # it before asyncio's child watcher can, which then reports
            # 255 instead of -9 (seen once on 3.11).
            if not killed:
                with contextlib.suppress(ProcessLookupError):
                    holder.kill()
            _, stderr = await asyncio.wait_for(holder.communicate(), 30)
        assert holder.returncode == -signal.SIGKILL, stderr.decode(errors="replace")
        # The leases run out (reserve waits for that, no sleep here): every
        # item is this consumer's, the three held ones on their second delivery.
        got = []
        for _ in range(5):
            async with q.reserve(timeout=10) as job:
                got.append((job.item, job.deliveries))
        assert sorted(got) == [("a", 2), ("b", 2), ("c", 2), ("d", 1), ("e", 1)]
        s = await q.astatistics()
        assert (s.size, s.in_flight, s.unfinished_tasks, s.dead_lettered) == (0, 0, 0, 0)
        # Each of the five acknowledged once, and no more: the dead holder's
        # leases were fenced off, and no row is left.
        counters = await stored_counters(url, name)
        assert counters == {"rows": 0, "dead": 0, "put": 5, "added": 5, "done": 5}


# -- producers and consumers killed at random --------------------------------------------

#: Each child runs this: ``role url name report first``. A producer puts
#: numbers from ``first`` on and writes each to ``report`` once its put
#: returned; a consumer writes ``got N`` once a reservation returned and
#: ``acked N`` once its ack returned. Both run until killed, or until their
#: stdin closes: then they stop between two items and exit with status 0.
WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    import chute

    role, url, name, report, first = sys.argv[1:6]
    fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def note(*lines):
        os.write(fd, "".join(f"{line}\\n" for line in lines).encode())

    # call's result (in a list), or None once stopping: cancelled, a put
    # either stored or left nothing, a reservation either returned or left
    # the item in place.
    async def unless_stopped(call, stopping):
        task = asyncio.ensure_future(call)
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return None
        return [task.result()]

    async def reserve(q):
        return await q.reserve()

    async def produce(q, stopping):
        i = int(first)
        while not stopping.done():
            batch = [i, i + 1, i + 2] if i % 3 == 0 else [i]
            call = q.put_batch(batch) if len(batch) > 1 else q.put(i)
            if await unless_stopped(call, stopping) is None:
                break
            note(*batch)
            i += len(batch)

    async def consume(q, stopping):
        while not stopping.done():
            done = await unless_stopped(reserve(q), stopping)
            if done is None:
                break
            job = done[0]
            note(f"got {job.item}")
            await asyncio.sleep(0.005)  # the handler's work: a kill may land here
            await job.aack()
            note(f"acked {job.item}")

    async def main():
        async with chute.open(url, name, 100, visibility_timeout=2.0) as q:
            stopping = asyncio.ensure_future(asyncio.to_thread(sys.stdin.buffer.read))
            await (produce if role == "produce" else consume)(q, stopping)

    asyncio.run(main())
    """
)

PRODUCERS = 2
CONSUMERS = 3
#: Kills, alternately of a producer and of a consumer, each one replaced at once.
KILLS = 8
#: A victim is killed once it wrote this many more lines since it was picked
#: (0: at once, maybe before it opened the queue): at a random point of its
#: puts, claims and acks.
PROGRESS = (0, 40)


@dataclass
class Worker:
    role: str
    first: int
    report: Path
    process: subprocess.Popen[bytes]
    stderr_path: Path
    stderr: IO[bytes]
    killed: bool = False

    def lines(self) -> list[str]:
        try:
            text = self.report.read_text()
        except FileNotFoundError:
            return []
        # A line cut by the kill is not a record.
        return text.splitlines()[: text.count("\n")]

    def describe(self) -> str:
        text = self.stderr_path.read_text(errors="replace").strip()
        return f"{self.role} (pid {self.process.pid}), status {self.process.returncode}:\n{text}"


def _start_worker(role: str, n: int, url: str, name: str, folder: Path) -> Worker:
    stderr_path = folder / f"{role}-{n}.stderr"
    stderr = stderr_path.open("wb")
    report = folder / f"{role}-{n}.lines"
    first = n * 10_000_000
    process = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", WORKER, role, url, name, str(report),
         str(first)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
    )  # fmt: skip
    return Worker(role, first, report, process, stderr_path, stderr)


def _until_progress(worker: Worker, lines: int, timeout: float = 20.0) -> None:
    """Until ``worker`` wrote ``lines`` lines (or ended)."""
    deadline = time.monotonic() + timeout
    while len(worker.lines()) < lines and worker.process.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{worker.role} made no progress within {timeout}s")
        time.sleep(0.005)


def _drain(url: str, name: str) -> list[int]:
    """Reserve and ack what is left, leases of killed consumers included
    (a reservation waits for them to run out)."""
    drained: list[int] = []

    async def drain() -> None:
        async with chute.open(url, name, visibility_timeout=2.0) as q:
            while True:
                s = await q.astatistics()
                if s.size + s.in_flight + s.delayed == 0:
                    break
                async with q.reserve(timeout=10) as job:
                    drained.append(job.item)

    asyncio.run(drain())
    return drained


def test_producers_and_consumers_killed_at_random_lose_nothing(server, name, tmp_path):
    seed = int(os.environ.get("CHUTE_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    url = server.url
    with chute.open(url, name, 100):
        pass  # made before the children race to
    counter = iter(range(1, 10**6))
    workers = [
        _start_worker(role, next(counter), url, name, tmp_path)
        for role in ["produce"] * PRODUCERS + ["consume"] * CONSUMERS
    ]
    try:
        for k in range(KILLS):
            role = ("produce", "consume")[k % 2]
            living = [w for w in workers if w.role == role and not w.killed]
            victim = rng.choice(living)
            _until_progress(victim, len(victim.lines()) + rng.randint(*PROGRESS))
            victim.process.send_signal(signal.SIGKILL)
            victim.killed = True
            workers.append(_start_worker(role, next(counter), url, name, tmp_path))
    finally:
        for w in workers:
            w.process.stdin.close()  # type: ignore[union-attr]  # the others: stop
        failed = []
        for w in workers:
            try:
                w.process.wait(30)
            except subprocess.TimeoutExpired:
                w.process.kill()
                w.process.wait(10)
            w.stderr.close()
            # Killed by us, or stopped by its closed stdin: no other ending,
            # and no traceback printed before it either.
            expected = -signal.SIGKILL if w.killed else 0
            text = w.stderr_path.read_text(errors="replace")
            if w.process.returncode != expected or "Traceback" in text:
                failed.append(w.describe())
    assert not failed, f"seed {seed}: workers ended by themselves:\n\n" + "\n\n".join(failed)

    drained = _drain(url, name)
    put_returned: set[int] = set()
    attempted: dict[int, int] = {}  # a producer's first number -> the last it put or tried
    deliveries: dict[int, list[Worker | None]] = defaultdict(list)  # None: the drain
    acked: Counter[int] = Counter(drained)
    for w in workers:
        if w.role == "produce":
            numbers = [int(line) for line in w.lines()]
            put_returned.update(numbers)
            attempted[w.first] = max(numbers, default=w.first) + 3  # a batch in flight
        else:
            for line in w.lines():
                what, number = line.split()
                if what == "got":
                    deliveries[int(number)].append(w)
                else:
                    acked[int(number)] += 1
    for number in drained:
        deliveries[number].append(None)

    assert put_returned, f"seed {seed}: the producers never got going"
    lost = put_returned - deliveries.keys()
    assert not lost, f"seed {seed}: {len(lost)} items whose put returned were never delivered"
    unknown = {n for n in deliveries if n > attempted.get(n - n % 10_000_000, -1)}
    assert not unknown, f"seed {seed}: delivered, never put: {sorted(unknown)[:10]}"
    twice = {n: c for n, c in acked.items() if c > 1}
    assert not twice, f"seed {seed}: acknowledged more than once: {twice}"
    for number, who in deliveries.items():
        # Delivered again only after a consumer was killed holding it: every
        # delivery but the one that was acknowledged is a killed consumer's.
        survivors = [w for w in who if w is None or not w.killed]
        assert len(survivors) <= 1, f"seed {seed}: {number} delivered to {len(survivors)} live"
        if acked[number] == 0:
            # Not seen acknowledged: only a killed consumer may have acked it
            # (killed between its ack and writing it down).
            assert all(w is not None and w.killed for w in who), (
                f"seed {seed}: {number} delivered {len(who)} times, never acknowledged"
            )

    async def final() -> dict[str, int]:
        return await stored_counters(url, name)

    counters = asyncio.run(final())
    # Nothing left, nothing dead, and every item stored was marked done once.
    assert counters["rows"] == counters["dead"] == 0, f"seed {seed}: {counters}"
    assert counters["done"] == counters["added"] == counters["put"], f"seed {seed}: {counters}"


# -- the server stopped, or crashed, and started again -----------------------------------


def _is_chute_error_naming(exc: BaseException, server: PostgresServer) -> None:
    assert type(exc).__module__.startswith("chute"), repr(exc)
    assert not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError), repr(exc)
    assert f"PostgreSQL at 127.0.0.1:{server.port}" in str(exc), str(exc)


async def _stop(server: PostgresServer, how: str) -> None:
    if how == "stop":
        await asyncio.to_thread(server.stop, "fast")
    else:
        await asyncio.to_thread(server.kill)


def listen_only(q: Any) -> Any:
    """``q``, its getters woken only by the listener: without their look of
    their own every second (which might fall while the server is down, or
    find the item by itself)."""
    q._backend.idle_poll_interval = None
    return q


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_a_server_stopped_or_crashed_keeps_what_it_stored_and_the_queue_works_again(how):
    # A crash (kill) with PostgreSQL's durable settings; a fast shutdown
    # checkpoints, so there the fast settings do.
    with own_server(fast=how == "stop") as server:
        async with (
            chute.open(server.url, "kept", visibility_timeout=30) as q,
            chute.open(server.url, "waited") as w,
        ):
            await q.put_batch(list(range(10)))
            for expected in (0, 1, 2):
                async with q.reserve(timeout=10) as job:
                    assert job.item == expected
            assert await q.get(timeout=10) == 3  # taken for good
            held = await q.reserve(timeout=10)  # held across the restart
            assert held.item == 4
            getter = asyncio.create_task(listen_only(w).get(timeout=30))
            await waiting_getters(w, 1)

            await _stop(server, how)
            # While it is down: chute's error, naming the server.
            with pytest.raises(chute.ChuteError) as put_error:
                await q.put("while down")
            _is_chute_error_naming(put_error.value, server)
            with pytest.raises(chute.ChuteError) as get_error:
                await q.get(timeout=10)  # fails at once, no waiting out its timeout
            _is_chute_error_naming(get_error.value, server)
            with pytest.raises(chute.ChuteError) as sync_error:
                await asyncio.to_thread(q.sync.put, "while down, from a thread")
            _is_chute_error_naming(sync_error.value, server)

            await asyncio.to_thread(server.start)  # same port, same data
            # The same queue object, not reopened: its first calls work.
            await q.put(10)
            # A claim does not wait for the disk: a crash may have forgotten
            # the last ones (the get of 3, the reservation of 4), which are
            # then delivered again; acknowledged items never are.
            forgotten = []
            try:
                await held.aack()  # the lease outlived the restart
            except chute.ChuteError as exc:
                refused = str(exc)
                forgotten.append(4)
            else:
                refused = ""
            assert not forgotten or (how == "kill" and "lease ran out" in refused), refused
            again = await q.get_batch(100, timeout=10)
            assert not set(again) & {0, 1, 2}  # acknowledged: never again
            if how == "stop":
                assert again == [5, 6, 7, 8, 9, 10]
            assert [i for i in again if i not in (3, 4)] == [5, 6, 7, 8, 9, 10]
            # Again only what a forgotten claim had taken; a forgotten
            # reservation's item is back, not lost.
            assert set(again) - {5, 6, 7, 8, 9, 10} <= {3, *forgotten}
            assert set(forgotten) <= set(again)
            assert await asyncio.to_thread(q.sync.put, 11) is None
            assert await asyncio.to_thread(q.sync.get, timeout=10) == 11
            s = await q.astatistics()
            acked = 4 - len(forgotten)  # 0-2, and 4 unless forgotten
            assert (s.size, s.in_flight, s.total_put) == (0, 0, 12)
            assert s.unfinished_tasks == 12 - acked
            # The get that waited across the restart: the listener, connected
            # again, hears of another client's put.
            async with chute.open(other_client(server.url), "waited") as other:
                await other.put("after the restart")
            assert await asyncio.wait_for(getter, 20) == "after the restart"
        counters = await stored_counters(server.url, "kept")
        assert counters == {"rows": 0, "dead": 0, "put": 12, "added": 12, "done": acked}


def _count_calls(q: Any) -> list[str]:
    """Record each call of ``q``'s backend made on the loop once answered
    (``"ok"`` or the error), to order a test after a getter's next look."""
    backend = q._backend
    run = backend.run
    answered: list[str] = []

    async def counted(call: Any, *, undo: Any = None) -> Any:
        try:
            result = await run(call, undo=undo)
        except BaseException as exc:
            answered.append(repr(exc))
            raise
        answered.append("ok")
        return result

    backend.run = counted
    return answered


async def test_a_get_blocked_across_a_restart_outlives_a_look_while_the_server_is_down():
    with own_server(fast=True) as server:
        async with chute.open(server.url, "outlives") as q:
            answered = _count_calls(q)
            getter = asyncio.create_task(q.get(timeout=30))
            await waiting_getters(q, 1)
            looked = len(answered)
            await _stop(server, "stop")
            # Its next look (at most a second away) finds the server gone...
            await wait_until(lambda: len(answered) > looked, timeout=20)
            await asyncio.to_thread(server.start)
            async with chute.open(other_client(server.url), "outlives") as other:
                await other.put("after the restart")
            # ...and it goes on waiting, as the README says.
            assert await asyncio.wait_for(getter, 20) == "after the restart", answered[looked:]


# -- every connection cut under a waiting get --------------------------------------------

#: Another session's connections, as the server lists them.
OTHERS = (
    "SELECT pid, application_name, query FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def _pools(q: Any) -> list[Any]:
    """The connection pools of ``q``'s store (one per event loop)."""
    return list(q._backend._store._pools.values())


async def _terminate(admin: Any, pids: list[int]) -> None:
    terminate = "SELECT pg_terminate_backend($1)"
    assert all([await admin.fetchval(terminate, pid) for pid in pids])


async def test_gets_blocked_while_every_connection_is_cut_still_receive():
    with own_server(fast=True) as server:
        admin = await asyncpg.connect(server.url, timeout=10)
        try:
            async with (
                chute.open(server.url, "cut") as q,
                chute.open(server.url, "cut, listening") as w,
            ):

                async def listening() -> bool:
                    return any(r["query"].startswith("LISTEN") for r in await admin.fetch(OTHERS))

                await until(listening)
                getters = [
                    asyncio.create_task(q.get(timeout=30)),  # its look every second, too
                    asyncio.create_task(listen_only(w).get(timeout=30)),
                ]
                await waiting_getters(q, 1)  # q's next look is a second away
                await waiting_getters(w, 1)
                rows = await admin.fetch(OTHERS)
                # chute's connections: the pools', named "chute", and the
                # listener's (which is not named: found by its LISTEN).
                pooled = [r["pid"] for r in rows if r["application_name"] == "chute"]
                listener = [r["pid"] for r in rows if r["query"].startswith("LISTEN")]
                assert pooled, rows
                assert len(listener) == 1, rows
                assert {r["pid"] for r in rows} == {*pooled, *listener}, rows
                # The pools' connections first, until this process saw them
                # end; then the listener's, whose new connection wakes the
                # getters. (A get woken before this process saw its
                # connection end is the race of the last test below.)
                await _terminate(admin, pooled)
                await wait_until(
                    lambda: all(c.is_closed() for p in _pools(q) for c in p._idle), timeout=10
                )
                await _terminate(admin, listener)

                async def gone() -> bool:
                    pids = {r["pid"] for r in await admin.fetch("SELECT pid FROM pg_stat_activity")}
                    return not pids & {*pooled, *listener}

                await until(gone)
                async with (
                    chute.open(other_client(server.url), "cut") as other_q,
                    chute.open(other_client(server.url), "cut, listening") as other_w,
                ):
                    await other_q.put("after the cut")
                    await other_w.put("after the cut, heard")
                got = await asyncio.wait_for(asyncio.gather(*getters), 20)
                assert got == ["after the cut", "after the cut, heard"]
        finally:
            await admin.close()


#: How many times the next tests make their race.
CUTS = 20


@contextlib.asynccontextmanager
async def raced(server: PostgresServer) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A function that ends, from an admin connection, the connections idle
    in this loop's pool of the store of ``server.url`` (the queues opened on
    that URL share it), at once."""
    from chute._backends.postgres_link import Store

    admin = await asyncpg.connect(server.url, timeout=10)
    try:
        store = Store._open[(server.url, "chute")]

        async def cut() -> None:
            pool = store._pool()
            await _terminate(admin, [c.get_server_pid() for c in pool._idle if not c.is_closed()])

        yield cut
    finally:
        await admin.close()


async def test_a_call_made_as_its_connection_is_cut_succeeds_or_raises_chute_error():
    """The race a cut makes, again and again, unordered on purpose: the
    server ends a pooled connection, and this process makes its next call
    on it at once, before or after it noticed. Whichever comes first, the
    call succeeds or raises ``ChuteError``, never the driver's error."""
    with own_server(fast=True) as server:
        async with chute.open(server.url, "raced") as q, raced(server) as cut:
            raw: list[str] = []
            for i in range(CUTS):
                with contextlib.suppress(chute.ChuteError):
                    await q.astatistics()  # leaves a connection idle
                await cut()
                try:
                    await q.put(i)
                except chute.ChuteError:
                    pass  # the connection failed: said so, by chute
                except Exception as exc:
                    raw.append(repr(exc))
            assert not raw, f"{len(raw)} of {CUTS} calls raised the driver's error: {raw[0]}"


async def test_a_waiting_get_woken_as_its_connection_is_cut_waits_on():
    """The same race under a waiting get, woken at once (as by the listener
    when it connects again): it goes on waiting, as the README says, and
    receives what another client puts."""
    with own_server(fast=True) as server:
        async with (
            chute.open(server.url, "raced") as q,
            chute.open(other_client(server.url), "raced") as other,
            raced(server) as cut,
        ):
            for i in range(CUTS):
                getter = asyncio.create_task(listen_only(q).get(timeout=30))
                await waiting_getters(q, 1)  # leaves its connection idle
                await cut()
                q._hub.ring(EVERYONE)
                await other.put(i)
                assert await asyncio.wait_for(getter, 20) == i, f"cut {i}"
