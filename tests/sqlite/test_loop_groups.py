"""Short calls committed on their own loop (``Database._run_gathered``):
never waiting there for another process's lock, never growing the
write-ahead log without bound, and sharing the file with the other loops
and threads of the process."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

import pytest

import chute
from chute._backends import sqlite_db, sqlite_log

pytestmark = pytest.mark.timeout(120)


async def test_a_put_does_not_hold_the_loop_while_another_process_writes(tmp_path):
    path = tmp_path / "q.db"
    async with chute.open(f"sqlite:///{path}", "q") as q:
        await q.put(0)
        other = sqlite3.connect(path, isolation_level=None)  # as another process would
        other.execute("BEGIN IMMEDIATE")  # holds the file's write lock
        try:
            started = time.monotonic()
            put = asyncio.create_task(q.put(1))
            ticks = 0
            for _ in range(20):  # the loop goes on while the put waits
                await asyncio.sleep(0)
                ticks += 1
            assert not put.done()
            # A put that waited on the loop for the lock (SQLite's busy
            # timeout is a minute) would have held these ticks that long.
            assert time.monotonic() - started < 10
            assert ticks == 20
        finally:
            other.execute("COMMIT")
            other.close()
        await asyncio.wait_for(put, 30)
        assert [await q.get(), await q.get()] == [0, 1]


async def _largest_log(path: os.PathLike[str], rounds: int) -> int:
    """Put and reserve an item of 2,000 characters ``rounds`` times, one
    at a time (each call committed on the loop), then find the queue
    empty; the largest the log beside the file was after a round."""
    item = "x" * 2000
    largest = 0
    async with chute.open(f"sqlite:///{os.fspath(path)}", "q") as q:
        for _ in range(rounds):
            await q.put(item)
            async with q.reserve() as job:
                assert job.item == item
            largest = max(largest, os.stat(f"{os.fspath(path)}-wal").st_size)
        assert await q.aqsize() == 0
    return largest


async def test_the_log_is_copied_back_while_single_calls_run(tmp_path, monkeypatch):
    # Every single call here commits on the loop, where SQLite's own
    # checkpoint is off: the file's thread must make them, or the log
    # grows by every commit (here well over 10 MiB).
    monkeypatch.setattr(sqlite_db, "CHECKPOINT_LOOK", 8)
    monkeypatch.setattr(sqlite_log, "CHECKPOINT_BYTES", 256 << 10)
    assert await _largest_log(tmp_path / "q.db", 1500) < 4 << 20


async def test_a_slow_copy_of_the_log_holds_the_loops_back(tmp_path, monkeypatch):
    # A disk that takes the copy slowly (here: every copy 50 ms late) must
    # not let the loop's commits run ahead of it: past two rounds of
    # CHECKPOINT_LOOK commits, the loop's calls wait for the thread, and
    # the log stays within a few commits of its limit.
    monkeypatch.setattr(sqlite_db, "CHECKPOINT_LOOK", 8)
    monkeypatch.setattr(sqlite_log, "CHECKPOINT_BYTES", 256 << 10)
    copy_back = sqlite_log.LogCopier.copy_back

    def slowly(self, conn, file_lock):
        time.sleep(0.05)
        copy_back(self, conn, file_lock)

    monkeypatch.setattr(sqlite_log.LogCopier, "copy_back", slowly)
    assert await _largest_log(tmp_path / "q.db", 300) < 1 << 20


async def test_what_is_committed_while_the_log_is_copied_back_is_kept(tmp_path, monkeypatch):
    # The thread copies the log on a connection of its own while the loop
    # goes on committing, and starts it again once it is long: every item
    # committed meanwhile is in the file, in order, for whoever opens it
    # next (here: after every connection of this process was closed, when
    # SQLite copies the rest and removes the log).
    monkeypatch.setattr(sqlite_db, "CHECKPOINT_LOOK", 4)
    monkeypatch.setattr(sqlite_log, "CHECKPOINT_BYTES", 64 << 10)
    path = tmp_path / "q.db"
    items = [f"{i}:" + "x" * 500 for i in range(2000)]
    async with chute.open(f"sqlite:///{path}", "q") as q:
        for item in items:
            await q.put(item)
        # Taken and acknowledged, between copies: gone for good.
        for item in items[:500]:
            async with q.reserve(timeout=5) as job:
                assert job.item == item
    assert _stored_in_the_file_alone(path) == 1500
    async with chute.open(f"sqlite:///{path}", "q") as q:
        assert await q.get_batch(2000, timeout=5) == items[500:]


def _stored_in_the_file_alone(path: os.PathLike[str]) -> int:
    """Items in the file, read as another program reads it; none of them
    left in a log beside it."""
    assert not os.path.exists(f"{os.fspath(path)}-wal")
    plain = sqlite3.connect(path)
    try:
        return int(plain.execute("SELECT count(*) FROM chute_item").fetchone()[0])
    finally:
        plain.close()


def test_loops_in_several_threads_share_one_file(tmp_path):
    # Each loop commits its own groups when the file is free, and sends them
    # to the file's thread when another loop (or the thread) has it.
    url = f"sqlite:///{tmp_path}/q.db"
    per_thread, threads = 600, 3
    got: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        async def main() -> None:
            async with chute.open(url, "q") as q:

                async def produce() -> None:
                    for i in range(per_thread):
                        await q.put(k * per_thread + i)

                async def consume() -> None:
                    for _ in range(per_thread // 2):
                        async with q.reserve(timeout=60) as job:
                            got[k].append(job.item)

                await asyncio.gather(produce(), consume(), consume())

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(90)
    assert not any(w.is_alive() for w in workers)
    assert errors == []
    assert sorted(i for part in got for i in part) == list(range(per_thread * threads))


def test_ctrl_c_in_a_loops_group_leaves_no_transaction_open(tmp_path, monkeypatch):
    # Ctrl-C lands while a loop commits its group (here: at its look for
    # other processes' commits). The put is rolled back, nobody waits for an
    # answer for ever, and the file's connection is usable afterwards.
    url = f"sqlite:///{tmp_path}/q.db"
    looks = sqlite_db._data_version
    main = threading.main_thread()

    def interrupted(conn: sqlite3.Connection) -> int:
        if threading.current_thread() is main:
            raise KeyboardInterrupt
        return looks(conn)

    async def put_one() -> None:
        async with chute.open(url, "q") as q:
            monkeypatch.setattr(sqlite_db, "_data_version", interrupted)
            await q.put(1)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(put_one())
    monkeypatch.setattr(sqlite_db, "_data_version", looks)

    async def after() -> tuple[int, int]:
        async with chute.open(url, "q") as q:
            before = await q.aqsize()
            await q.put(2)
            return before, await q.get()

    assert asyncio.run(after()) == (0, 2)


async def test_more_calls_in_one_pass_than_a_loops_group_keep_their_order(tmp_path):
    # The first LOOP_GROUP are committed on the loop, the rest by the file's
    # thread after them: stored in the order they were made.
    n = sqlite_db.LOOP_GROUP + 8
    async with chute.open(f"sqlite:///{tmp_path}/q.db", "q") as q:
        await asyncio.gather(*(q.put(i) for i in range(n)))
        assert await q.get_batch(n, timeout=10) == list(range(n))


@pytest.mark.parametrize("how", ["ack", "nack"])
async def test_a_settle_cancelled_before_its_group_runs_is_still_made(tmp_path, how):
    # The settle is gathered for this pass's group; its caller is cancelled
    # before the group runs. It is made anyway (a settle, once made, is seen
    # through), and the caller still sees its cancellation.
    async with chute.open(f"sqlite:///{tmp_path}/q.db", "q") as q:
        await q.put("x")
        job = await q.reserve()
        settle = asyncio.create_task(job.aack() if how == "ack" else job.anack())
        await asyncio.sleep(0)  # the settle is gathered, its group not yet run
        settle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(settle, 10)
        s = await q.astatistics()
        if how == "ack":
            assert (s.size, s.in_flight, s.unfinished_tasks) == (0, 0, 0)
        else:
            assert (s.size, s.in_flight) == (1, 0)
            assert await q.get(timeout=10) == "x"
