"""The SQLite transport beyond the shared contract: files, processes, crashes."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import chute
from tests.conftest import calls_answered, wait_until

pytestmark = pytest.mark.timeout(120)


def url(tmp_path: Any, name: str = "q.db") -> str:
    return f"sqlite:///{tmp_path / name}"


# -- opening -------------------------------------------------------------------------


async def test_open_forms_and_durability_across_reopen(tmp_path):
    async with chute.open(url(tmp_path), "jobs", maxsize=5) as q:
        await q.put({"n": 1})
        await q.put_batch([2, [3, "x"]])
        assert (q.qsize(), q.maxsize) == (3, 5)
    q = await chute.open(url(tmp_path), "jobs")  # the items are in the file
    try:
        assert await q.get_batch(10) == [{"n": 1}, 2, [3, "x"]]
    finally:
        await q.aclose()


async def test_several_queues_share_a_file(tmp_path):
    async with chute.open(url(tmp_path), "a") as a, chute.open(url(tmp_path), "b") as b:
        await a.put("for a")
        await b.put("for b")
        assert (a.qsize(), b.qsize()) == (1, 1)
        assert await b.get() == "for b"
        assert await a.get() == "for a"


async def test_memory_url_gives_an_in_process_queue():
    q = await chute.open("memory://", "x", maxsize=2)
    assert isinstance(q, chute.Queue)
    assert q.maxsize == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("sqlite://host/q.db", "no host"),
        ("sqlite:///", "no file name"),
        ("sqlite:///q.db?timeout=3", "keyword arguments"),
        ("amqp://localhost/db", "unknown scheme"),
        ("just-a-path.db", "needs a scheme"),
        ("memory://somewhere", "just 'memory://'"),
    ],
)
def test_a_wrong_url_is_refused_at_the_call(bad, message):
    with pytest.raises(ValueError, match=message):
        chute.open(bad, "q")


async def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(chute.ChuteError, match="does not exist"):
        await chute.open(f"sqlite:///{tmp_path}/nope/q.db", "q")


async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"dear diary, " * 100)
    with pytest.raises(chute.ChuteError, match="not a SQLite database"):
        await chute.open(f"sqlite:///{path}", "q")
    assert path.read_bytes() == b"dear diary, " * 100


async def test_someone_elses_database_is_refused(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    with pytest.raises(chute.ChuteError, match="not a chute queue file"):
        await chute.open(f"sqlite:///{path}", "q")


async def test_a_file_from_a_newer_chute_is_refused(tmp_path):
    async with chute.open(url(tmp_path), "q"):
        pass
    conn = sqlite3.connect(tmp_path / "q.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(chute.ChuteError, match="newer chute"):
        await chute.open(url(tmp_path), "q")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"durability": "sometimes"}, ValueError),
        ({"codec": "yaml"}, ValueError),
        ({"codec": 42}, TypeError),
        ({"visibility_timeout": 0}, ValueError),
        ({"max_deliveries": 0}, ValueError),
        ({"maxsize": -1}, ValueError),
    ],
)
async def test_bad_options_are_refused(tmp_path, options, error):
    with pytest.raises(error):
        await chute.open(url(tmp_path), "q", **options)


# -- codecs --------------------------------------------------------------------------------


async def test_an_item_json_cannot_encode_fails_at_put_and_stores_nothing(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        with pytest.raises(TypeError, match="json codec cannot encode"):
            await q.put(object())
        with pytest.raises(ValueError, match="json codec cannot encode"):
            await q.put(float("nan"))
        with pytest.raises(TypeError):
            await q.put_batch([1, object()])
        assert q.qsize() == 0
        assert q.statistics().total_put == 0


async def test_pickle_only_when_asked_and_custom_codecs(tmp_path):
    async with chute.open(url(tmp_path), "p", codec="pickle") as q:
        await q.put((1, {2}))
        assert await q.get() == (1, {2})

    class Upper:
        def encode(self, item: Any) -> bytes:
            return str(item).upper().encode()

        def decode(self, data: bytes) -> Any:
            return data.decode()

    async with chute.open(url(tmp_path), "c", codec=Upper()) as q:
        await q.put("shout")
        assert await q.get() == "SHOUT"


async def test_an_item_that_cannot_be_decoded_goes_to_the_dead_letters(tmp_path):
    async with chute.open(url(tmp_path), "q", codec="pickle") as writer:
        await writer.put(("a tuple",))
    async with chute.open(url(tmp_path), "q") as reader:  # json cannot read a pickle
        await reader.put("plain")
        with pytest.raises(chute.ChuteError, match="could not be decoded"):
            await reader.get_batch(2)
        s = reader.statistics()
        assert (s.size, s.dead_lettered) == (1, 1)  # the other one went back
        assert await reader.get() == "plain"
        (dead,) = reader.dead_letters()  # as stored: json still cannot read it
        assert isinstance(dead.item, bytes)
        assert (dead.reason, dead.error_type) == ("undecodable", "UnicodeDecodeError")
        assert "can't decode byte" in dead.error
    async with chute.open(url(tmp_path), "q", codec="pickle") as again:
        assert [d.item for d in again.dead_letters()] == [("a tuple",)]


# -- leases ---------------------------------------------------------------------------------


async def test_a_lease_runs_out_and_a_late_ack_is_refused(tmp_path):
    async with chute.open(url(tmp_path), "q", visibility_timeout=0.2) as q:
        await q.put("slow job")
        first = await q.reserve()
        assert q.statistics().in_flight == 1
        again = await q.reserve(timeout=10)  # after the lease ran out
        assert (again.item, again.deliveries) == ("slow job", 2)
        with pytest.raises(chute.ChuteError, match="lease ran out"):
            first.ack()
        assert q.statistics().in_flight == 1  # the late ack deleted nothing
        again.ack()
        s = q.statistics()
        assert (s.in_flight, s.size, s.unfinished_tasks) == (0, 0, 0)


async def test_expired_on_its_last_delivery_it_becomes_a_dead_letter(tmp_path):
    async with chute.open(url(tmp_path), "q", visibility_timeout=0.05, max_deliveries=1) as q:
        await q.put("crashes its consumer")
        await q.reserve()  # and never settled
        await asyncio.sleep(0.1)
        with pytest.raises(TimeoutError):
            await q.get(timeout=0.05)
        (dead,) = q.dead_letters()
        assert (dead.item, dead.reason, dead.deliveries) == (
            "crashes its consumer",
            "lease expired",
            1,
        )
        assert (dead.error_type, dead.error, dead.traceback) == (None, None, None)
        assert q.statistics().unfinished_tasks == 0


async def test_immediate_shutdown_keeps_the_items_in_the_file(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        await q.put_batch([1, 2])
        assert q.shutdown(immediate=True) == []
        with pytest.raises(chute.QueueShutDown):
            await q.get()
    async with chute.open(url(tmp_path), "q") as q:  # recorded in the file
        assert q.is_shutdown
        q.reopen()
        assert await q.get_batch(5) == [1, 2]


async def test_the_peak_counts_items_waiting_not_items_out_on_a_lease(tmp_path):
    async with chute.open(url(tmp_path), "q", maxsize=3) as q:
        await q.put_batch([1, 2])
        jobs = [await q.reserve(), await q.reserve()]  # both out: none waiting
        await q.put(3)
        assert (q.statistics().size, q.statistics().peak_size) == (1, 2)
        await q.put_batch([4, 5])  # three waiting: the bound counts no lease
        assert (q.statistics().size, q.statistics().peak_size) == (3, 3)
        with pytest.raises(chute.QueueFull):
            q.put_nowait(6)
        for job in jobs:
            await job.aack()
        s = q.statistics()
        assert (s.size, s.peak_size, s.total_put, s.total_got) == (3, 3, 5, 2)
        assert await q.get_batch(5) == [3, 4, 5]


async def test_a_get_after_an_immediate_shutdown_through_another_queue_object(tmp_path):
    # The same queue twice in one process: one file, one connection. The
    # get's claim looks at the queue's state in the statement that counts it.
    async with chute.open(url(tmp_path), "q") as q, chute.open(url(tmp_path), "q") as other:
        await q.put_batch([1, 2])
        assert await q.get() == 1  # this process knows when items come due
        other.shutdown(immediate=True)
        with pytest.raises(chute.QueueShutDown):
            await q.get()
        s = q.statistics()
        assert (s.size, s.total_got) == (1, 1)


# -- other processes ------------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        timeout=60,
        check=False,
        capture_output=True,
        text=True,
    )


async def test_a_shutdown_in_another_process_is_seen_by_a_put_and_a_get(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        await q.put_batch([1, 2])
        code = f"""
            import chute
            with chute.open({url(tmp_path)!r}, "q") as q:
                q.shutdown(immediate=True)
        """
        done = await asyncio.to_thread(_run, code)
        assert done.returncode == 0, done.stderr
        with pytest.raises(chute.QueueShutDown):
            await q.put(3)
        with pytest.raises(chute.QueueShutDown):
            await q.get()
        s = q.statistics()
        assert (s.size, s.total_put, s.total_got) == (2, 2, 0)  # left as they were


async def test_a_put_in_another_process_wakes_a_waiting_get(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        getter = asyncio.create_task(q.get(timeout=30))
        # Waiting before the put lands: woken by another process's commit,
        # not finding the item at its first look.
        await wait_until(lambda: q.statistics().getters_waiting == 1)
        code = f"""
            import asyncio, chute
            async def main():
                async with chute.open({url(tmp_path)!r}, "q") as q:
                    await q.put("from afar")
                    q.shutdown()
            asyncio.run(main())
        """
        done = await asyncio.to_thread(_run, code)
        assert done.returncode == 0, done.stderr
        assert await asyncio.wait_for(getter, 10) == "from afar"
        with pytest.raises(chute.QueueShutDown):  # seen by every process
            await q.get()


def _hold_and_die(path: str, ready: Any) -> None:
    async def main() -> None:
        q = await chute.open(f"sqlite:///{path}", "q", visibility_timeout=0.5)
        job = await q.reserve()
        ready.put(job.item)
        await asyncio.sleep(60)  # killed here, holding the lease

    asyncio.run(main())


async def test_a_consumer_killed_holding_a_reservation_loses_nothing(tmp_path):
    path = str(tmp_path / "q.db")
    async with chute.open(f"sqlite:///{path}", "q", visibility_timeout=0.5) as q:
        await q.put("precious")
        ctx = mp.get_context("spawn")
        ready = ctx.SimpleQueue()
        p = ctx.Process(target=_hold_and_die, args=(path, ready))
        p.start()
        try:
            assert await asyncio.to_thread(ready.get) == "precious"
            os.kill(p.pid, signal.SIGKILL)
        finally:
            p.join(30)
        async with q.reserve(timeout=30) as job:
            assert (job.item, job.deliveries) == ("precious", 2)
        assert q.statistics().unfinished_tasks == 0


def _produce(path: str, report: str, start: int) -> None:
    async def main() -> None:
        fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        async with chute.open(f"sqlite:///{path}", "crash") as q:
            for i in range(start, start + 100_000):
                await q.put(i)
                os.write(fd, f"{i}\n".encode())  # its put returned

    asyncio.run(main())


def _consume(path: str, report: str) -> None:
    async def main() -> None:
        fd = os.open(report, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        async with chute.open(f"sqlite:///{path}", "crash", visibility_timeout=0.3) as q:
            while True:
                async with q.reserve() as job:
                    os.write(fd, f"{job.item}\n".encode())  # before the ack

    asyncio.run(main())


def _numbers(path: str) -> set[int]:
    try:
        with open(path) as f:
            return {int(line) for line in f if line.strip().isdigit()}
    except FileNotFoundError:
        return set()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def test_producers_and_consumers_killed_at_random_lose_nothing(tmp_path):
    rng = random.Random(11)
    path = str(tmp_path / "q.db")
    stored, handled = str(tmp_path / "stored"), str(tmp_path / "handled")
    ctx = mp.get_context("forkserver")
    for round_ in range(6):
        procs = [
            ctx.Process(target=_produce, args=(path, stored, round_ * 1_000_000)),
            ctx.Process(target=_produce, args=(path, stored, round_ * 1_000_000 + 500_000)),
            ctx.Process(target=_consume, args=(path, handled)),
        ]
        before = _size(stored)
        for p in procs:
            p.start()
        # Kill them while they work, not before they start (a loaded machine
        # can take a second to start a process): once a put has returned.
        deadline = time.monotonic() + 60
        while _size(stored) == before:
            assert time.monotonic() < deadline, "the producers never got going"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.5))
        for p in rng.sample(procs, len(procs)):
            os.kill(p.pid, signal.SIGKILL)
            time.sleep(rng.uniform(0, 0.05))
        for p in procs:
            p.join(30)

    drained: list[int] = []

    async def drain() -> None:
        async with chute.open(f"sqlite:///{path}", "crash", visibility_timeout=0.3) as q:
            while True:
                try:
                    async with q.reserve(timeout=1.0) as job:
                        drained.append(job.item)
                except TimeoutError:
                    break
            s = q.statistics()
            assert (s.size, s.in_flight) == (0, 0)

    asyncio.run(drain())
    put_returned = _numbers(stored)
    assert put_returned, "the producers never got going"
    assert put_returned <= _numbers(handled) | set(drained), "an item whose put returned was lost"


async def test_closing_wakes_this_queues_waiters(tmp_path):
    q = await chute.open(url(tmp_path), "q")
    getter = asyncio.create_task(q.get())
    await wait_until(lambda: q.statistics().getters_waiting == 1)
    await q.aclose()
    with pytest.raises(chute.ChuteError, match="closed"):
        await asyncio.wait_for(getter, 10)


# -- regressions from review -----------------------------------------------------------


async def test_every_waiting_getter_is_served_one_item_each(tmp_path):
    # A getter rung again while taking an item must pass the spare ring on.
    async with chute.open(url(tmp_path), "q") as q:
        getters = [asyncio.create_task(q.get()) for _ in range(50)]
        await wait_until(lambda: q.statistics().getters_waiting == 50)
        for i in range(50):
            await q.put(i)
        got = await asyncio.wait_for(asyncio.gather(*getters), 10)
        assert sorted(got) == list(range(50))


async def _hold_the_database_thread(q: Any) -> tuple[Any, threading.Event]:
    """Keep ``q``'s database thread busy until the returned event is set:
    the calls made meanwhile wait in its inbox, in order."""
    holding, release = threading.Event(), threading.Event()

    def hold(c: Any) -> None:
        holding.set()
        release.wait(10)

    held = q._db.submit(hold, write=False)
    await asyncio.to_thread(holding.wait, 10)
    return held, release


async def test_a_get_cancelled_just_before_close_loses_nothing(tmp_path):
    # Its claim ran and committed, the cancel came before the answer, and
    # the file was closed before the give-back: given back all the same.
    q = await chute.open(url(tmp_path), "q")
    await q.put("precious")
    held, release = await _hold_the_database_thread(q)
    getter = asyncio.create_task(q.get())
    await wait_until(lambda: len(q._db._inbox) == 1)  # its claim waits behind the hold
    after_the_claim = q._db.submit(lambda c: None, write=False)
    # From here this loop runs nothing until the cancel and the close: the
    # thread runs the claim and commits it, and the getter cannot see the
    # answer in between (the blocking calls on the loop are the point).
    release.set()
    after_the_claim.result(10)
    getter.cancel()
    q.close()
    with pytest.raises(asyncio.CancelledError):
        await getter
    assert held.done()
    async with chute.open(url(tmp_path), "q") as again:
        assert await again.get(timeout=10) == "precious"


async def test_a_get_cancelled_before_the_thread_took_its_claim_loses_nothing(tmp_path):
    q = await chute.open(url(tmp_path), "q")
    await q.put("precious")
    held, release = await _hold_the_database_thread(q)
    getter = asyncio.create_task(q.get())
    await wait_until(lambda: len(q._db._inbox) == 1)  # its claim waits behind the hold
    getter.cancel()
    closing = asyncio.ensure_future(q.aclose())  # the close waits for the thread too
    with pytest.raises(asyncio.CancelledError):
        await getter  # it left while the thread was held: the claim never runs
    release.set()
    await asyncio.wrap_future(held)
    await asyncio.wait_for(closing, 10)
    async with chute.open(url(tmp_path), "q") as again:
        assert await again.get(timeout=10) == "precious"


async def test_a_put_that_times_out_stores_nothing(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        rng = random.Random(5)
        stored = []
        for i in range(200):
            try:
                async with asyncio.timeout(rng.choice([0.0001, 0.0005, 0.002, 0.05])):
                    await q.put(i)
                stored.append(i)
            except TimeoutError:
                pass
        got = []
        while not q.empty():
            got += await q.get_batch(1000)
        assert got == stored
        assert q.statistics().total_put == len(stored)


async def test_when_a_lease_runs_out_a_waiting_getter_takes_the_item(tmp_path):
    async with chute.open(url(tmp_path), "q", visibility_timeout=0.3) as q:
        q.put_nowait("X")
        await q.reserve()  # taken first, and never settled: its consumer hangs
        # The first getter sees the lease and sleeps until it runs out; the
        # second gets in line behind it without a look of its own.
        impatient = asyncio.create_task(q.get(timeout=0.1))
        await wait_until(lambda: q.statistics().getters_waiting == 1)
        patient = asyncio.create_task(q.get())
        await wait_until(lambda: q.statistics().getters_waiting == 2)
        await asyncio.gather(impatient, return_exceptions=True)  # gone, with its timer
        assert await asyncio.wait_for(patient, 10) == "X"


async def test_join_returns_when_an_expired_lease_becomes_a_dead_letter(tmp_path):
    async with chute.open(url(tmp_path), "q", visibility_timeout=0.05, max_deliveries=1) as q:
        await q.put("poison")
        await q.reserve()  # never settled
        joiner = asyncio.create_task(q.join())
        await calls_answered(q)  # the joiner waits before the lease runs out
        assert not joiner.done()
        await asyncio.sleep(0.1)  # the lease runs out
        with pytest.raises(TimeoutError):
            await q.get(timeout=0.05)  # finds the lease ran out: a dead letter
        await asyncio.wait_for(joiner, 10)


async def test_join_returns_after_an_immediate_shutdown(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        await q.put_batch([1, 2])
        joiner = asyncio.create_task(q.join())
        await calls_answered(q)  # the joiner waits before the shutdown
        assert not joiner.done()
        q.shutdown(immediate=True)
        await asyncio.wait_for(joiner, 10)


async def test_a_full_disk_is_named_and_nothing_is_half_written(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        pages = q._db.call(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        q._db.call(lambda c: c.execute(f"PRAGMA max_page_count={pages + 2}"))  # a full disk
        with pytest.raises(chute.ChuteError, match="full: nothing was stored"):
            await q.put("x" * 100_000)
        assert q.qsize() == 0
        await q.put("small")  # what fits still goes in
        assert await q.get() == "small"


async def test_one_call_failing_in_a_group_commit_leaves_the_others_whole(tmp_path):
    async with chute.open(url(tmp_path), "q", visibility_timeout=0.05) as q:
        await q.put("stale")
        stale = await q.reserve()
        await asyncio.sleep(0.1)  # its lease runs out
        again = await q.reserve()  # delivered again: the first job's token is old
        # Hold the database thread so that the next calls wait and are
        # committed together, in the order they were made.
        holding, release = threading.Event(), threading.Event()

        def hold(c: Any) -> None:
            holding.set()
            release.wait(10)

        held = q._db.submit(hold, write=False)
        await asyncio.to_thread(holding.wait, 10)
        first = asyncio.ensure_future(q.put("before"))
        late_ack = asyncio.ensure_future(asyncio.to_thread(stale.ack))
        await wait_until(lambda: len(q._db._inbox) == 2)
        last = asyncio.ensure_future(q.put("after"))
        await wait_until(lambda: len(q._db._inbox) == 3)
        release.set()
        await asyncio.wrap_future(held)
        await asyncio.wait_for(asyncio.gather(first, last), 10)
        with pytest.raises(chute.ChuteError, match="lease ran out"):
            await asyncio.wait_for(late_ack, 10)
        again.ack()
        assert await q.get_batch(10, timeout=1) == ["before", "after"]
        stats = q.statistics()
        assert (stats.total_put, stats.unfinished_tasks, stats.size) == (3, 2, 0)


async def test_large_batches_are_taken_whole(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        await q.put_batch(range(1200))
        assert await q.get_batch(1200) == list(range(1200))
        await q.put_batch(range(1200))
        job_ids = await q.get_batch(2000)
        assert len(job_ids) == 1200


async def test_async_with_a_memory_url():
    async with chute.open("memory://", "q") as q:
        await q.put(1)
        assert await q.get() == 1


async def test_bounds_passed_explicitly_replace_the_stored_ones_for_everyone(tmp_path):
    async with chute.open(url(tmp_path), "q", maxsize=1) as first:
        await first.put("a")
        with pytest.raises(chute.QueueFull):
            first.put_nowait("b")
        async with chute.open(url(tmp_path), "q", maxsize=3, max_deliveries=1) as second:
            first.put_nowait("b")  # the file says 3 now, for every handle
            assert first.statistics().maxsize == 3
            with pytest.raises(RuntimeError):
                async with first.reserve() as job:
                    assert job.item == "a"
                    raise RuntimeError("fails once: enough, with max_deliveries=1")
            (dead,) = second.dead_letters()
            assert (dead.item, dead.reason, dead.error_type) == ("a", "failed", "RuntimeError")
            assert dead.error == "fails once: enough, with max_deliveries=1"
            assert "raise RuntimeError" in dead.traceback


# -- the blocking face -------------------------------------------------------------------


def test_the_sync_face_for_plain_threads(tmp_path):
    with chute.open(url(tmp_path), "q", maxsize=2) as q:
        s = q.sync
        with pytest.raises(chute.QueueEmpty):
            s.get(timeout=0.05)
        s.put_batch([1, 2])
        with pytest.raises(chute.QueueFull):
            s.put(3, timeout=0.05)
        assert (s.qsize(), s.full()) == (2, True)
        with s.reserve() as job:
            assert (job.item, job.deliveries) == (1, 1)
        with pytest.raises(ValueError, match="boom"), s.reserve():
            raise ValueError("boom")  # given back
        assert s.get_batch(5) == [2]
        s.task_done()
        s.join()  # the acknowledged job counted itself
        assert s.statistics().unfinished_tasks == 0


def test_a_blocked_sync_get_is_woken_by_a_put_from_another_thread(tmp_path):
    import threading

    with chute.open(url(tmp_path), "q") as q:
        got: list[Any] = []
        consumer = threading.Thread(target=lambda: got.extend(q.sync))  # until shut down
        consumer.start()
        while q.statistics().getters_waiting == 0:
            time.sleep(0.001)
        q.sync.put("a")
        q.sync.put_batch(["b", "c"])
        q.sync.shutdown()
        consumer.join(10)
        assert not consumer.is_alive()
        assert got == ["a", "b", "c"]


async def test_the_sync_face_refuses_to_block_a_running_loop(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        with pytest.raises(RuntimeError, match="would block the running event loop"):
            q.sync.get()
        with pytest.raises(chute.QueueEmpty):
            q.sync.get_nowait()  # never blocks: allowed


def _sync_worker(path: str) -> None:
    # A worker with no event loop of its own.
    with (
        chute.open(f"sqlite:///{path}", "jobs") as q,
        chute.open(f"sqlite:///{path}", "results") as results,
    ):
        for n in q.sync:
            results.sync.put(n * n)


def test_a_worker_process_uses_the_sync_face(tmp_path):
    path = str(tmp_path / "q.db")

    async def produce() -> list[int]:
        async with (
            chute.open(f"sqlite:///{path}", "jobs") as jobs,
            chute.open(f"sqlite:///{path}", "results") as results,
        ):
            await jobs.put_batch(range(20))
            worker = mp.get_context("spawn").Process(target=_sync_worker, args=(path,))
            worker.start()
            out = [await results.get(timeout=30) for _ in range(20)]
            jobs.shutdown()
            await asyncio.to_thread(worker.join, 30)
            assert worker.exitcode == 0
            return out

    assert sorted(asyncio.run(produce())) == [n * n for n in range(20)]


async def test_a_long_handler_extends_its_lease(tmp_path):
    async with chute.open(url(tmp_path), "q", visibility_timeout=0.2) as q:
        await q.put("long job")
        async with q.reserve() as job:
            for _ in range(3):
                await asyncio.sleep(0.1)
                await job.extend()  # 0.2 s more from now, each time
            with pytest.raises(TimeoutError):
                await q.get(timeout=0.05)  # still ours: nobody else gets it
        s = q.statistics()
        assert (s.unfinished_tasks, s.size, s.in_flight) == (0, 0, 0)  # acked once, never again
        await q.put("short job")
        stale = await q.reserve()
        await asyncio.sleep(0.3)
        again = await q.reserve(timeout=10)  # its lease ran out
        with pytest.raises(chute.ChuteError, match="cannot be extended"):
            await stale.extend()
        again.ack()


@pytest.mark.parametrize("call", ["get", "put"])
def test_ctrl_c_during_a_blocking_call_leaves_the_queue_unchanged(tmp_path, call):
    # The call is on the database thread, held up by another connection's
    # write lock, when Ctrl-C arrives: it runs to its end, and is undone.
    import threading

    with chute.open(url(tmp_path), "q") as q:
        q.sync.put("kept")
        blocker = sqlite3.connect(tmp_path / "q.db", isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
            threading.Timer(0.5, blocker.rollback).start()
            with pytest.raises(KeyboardInterrupt):
                if call == "get":
                    q.sync.get(timeout=30)
                else:
                    q.sync.put("interrupted", timeout=30)
        finally:
            signal.signal(signal.SIGINT, previous)
        s = q.statistics()
        assert (s.size, s.in_flight, s.unfinished_tasks) == (1, 0, 1)
        assert q.sync.get_nowait() == "kept"
        assert q.sync.qsize() == 0
    blocker.close()


def _use_after_fork(q: Any, answers: Any) -> None:
    try:
        q.sync.put("from the child")
    except chute.ChuteError as exc:
        answers.put(str(exc))
    else:
        answers.put("stored")


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork() here")
def test_a_queue_used_in_a_forked_child_is_refused_and_the_parent_goes_on(tmp_path):
    # The child shares the parent's connection and thread state, which
    # SQLite forbids using across fork(): every call there is refused.
    with chute.open(url(tmp_path), "q") as q:
        q.sync.put("before")
        ctx = mp.get_context("fork")
        answers = ctx.Queue()
        child = ctx.Process(target=_use_after_fork, args=(q, answers))
        child.start()
        answer = answers.get(timeout=30)
        child.join(30)
        assert "fork()" in answer
        q.sync.put("after")
        assert q.sync.get_batch(10, timeout=0) == ["before", "after"]
