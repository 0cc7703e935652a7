"""A SQLite queue's bounds belong to the queue, and looking creates nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

import chute
from chute._backends.sqlite import SqliteQueue
from chute._open import queue_names
from tests.conftest import calls_answered, wait_until

pytestmark = pytest.mark.timeout(120)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a Python process of its own (another process, another connection)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        timeout=60,
        check=False,
        capture_output=True,
        text=True,
    )


# -- stored bounds ---------------------------------------------------------------------


async def test_a_bare_open_from_another_process_keeps_the_bounds(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    async with chute.open(url, "q", maxsize=5, max_deliveries=2) as q:
        await q.put_batch(range(5))
        looked = await asyncio.to_thread(
            _run,
            f"""
            import chute
            with chute.open({url!r}, "q") as q:
                print(q.maxsize, q.statistics().maxsize)
                try:
                    q.sync.put_nowait("sixth")
                except chute.QueueFull:
                    print("full")
            """,
        )
        assert looked.returncode == 0, looked.stderr
        assert looked.stdout.split() == ["5", "5", "full"]
        with pytest.raises(chute.QueueFull):  # still bounded here too
            q.put_nowait("sixth")
        assert (q.maxsize, q.qsize()) == (5, 5)
        # max_deliveries survived the look as well: the second failure is the last.
        outcomes = []
        for _ in range(2):
            job = await q.reserve(timeout=10)
            assert job.item == 0
            job.nack(error=ValueError("no"))
            outcomes.append(job.outcome)
        assert outcomes == ["retried", "dead"]


async def test_bounds_passed_in_another_process_wake_a_putter_here(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    async with chute.open(url, "q", maxsize=1) as q:
        await q.put("a")
        putter = asyncio.create_task(q.put("b", timeout=30))
        await wait_until(lambda: q.statistics().putters_waiting == 1)
        done = await asyncio.to_thread(
            _run,
            f"""
            import chute
            with chute.open({url!r}, "q", create=False) as q:
                q.configure(maxsize=2)
            """,
        )
        assert done.returncode == 0, done.stderr
        await asyncio.wait_for(putter, 10)  # seen by polling the file's data_version
        assert (q.maxsize, q.qsize()) == (2, 2)


async def test_a_new_queue_is_unbounded_with_no_limit_and_none_removes_a_limit(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with chute.open(url, "q") as q:
        assert q.maxsize == 0
        await q.put("x")
        for _ in range(3):  # no limit: given back every time
            job = await q.reserve(timeout=10)
            job.nack()
            assert job.outcome == "retried"
    async with chute.open(url, "q", max_deliveries=4) as q:
        async with chute.open(url, "q", max_deliveries=None):  # explicit: no limit
            pass
        job = await q.reserve(timeout=10)
        assert job.deliveries == 4
        job.nack()
        assert job.outcome == "retried"


async def test_configure_wakes_a_putter_blocked_here_at_once(tmp_path):
    async with chute.open(f"sqlite:///{tmp_path / 'q.db'}", "q", maxsize=1) as q:
        await q.put("a")
        putter = asyncio.create_task(q.put("b"))
        await wait_until(lambda: q.statistics().putters_waiting == 1)
        q.configure(max_deliveries=3)  # not a bound on size: still waits
        await calls_answered(q)  # woken or not, the putter has looked again by now
        assert not putter.done()
        q.configure(maxsize=3)
        await asyncio.wait_for(putter, 10)
        assert q.statistics().maxsize == 3


def test_assigning_maxsize_on_the_sync_face_wakes_a_putter_blocked_in_a_thread(tmp_path):
    with chute.open(f"sqlite:///{tmp_path / 'q.db'}", "q", maxsize=1) as q:
        face = q.sync
        face.put("a")
        done = threading.Event()

        def put() -> None:
            face.put("b", timeout=30)
            done.set()

        t = threading.Thread(target=put)
        t.start()
        try:
            while q.statistics().putters_waiting != 1:
                threading.Event().wait(0.001)
            assert not done.is_set()
            face.maxsize = 2
            assert done.wait(10)
        finally:
            t.join(10)
        assert (face.maxsize, face.qsize(), face.unfinished_tasks) == (2, 2, 2)


async def test_a_batch_larger_than_the_stored_bound_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    async with chute.open(url, "q", maxsize=2):
        pass
    async with chute.open(url, "q") as q:  # the bound comes from the file
        with pytest.raises(ValueError, match="can never fit a queue of maxsize 2"):
            await q.put_batch([1, 2, 3])
        assert q.qsize() == 0


# -- looking creates nothing ------------------------------------------------------------


async def test_create_false_on_a_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(chute.QueueNotFound, match=f"^no file {path}$"):
        await chute.open(f"sqlite:///{path}", "q", create=False)
    with pytest.raises(chute.QueueNotFound, match="no file"):
        SqliteQueue.queue_names(str(path))
    assert os.listdir(tmp_path) == []


async def test_create_false_on_a_missing_queue_names_the_queues_there(tmp_path):
    path = tmp_path / "jobs.db"
    url = f"sqlite:///{path}"
    async with chute.open(url, "thumbnails"), chute.open(url, "emails"):
        pass
    with pytest.raises(chute.QueueNotFound) as caught:
        await chute.open(url, "q", create=False)
    assert str(caught.value) == f"no queue 'q' in {path}; queues here: emails, thumbnails"
    assert isinstance(caught.value, LookupError)
    assert queue_names(url) == ["emails", "thumbnails"]  # no row was made for 'q'
    async with chute.open(url, "emails", create=False) as q:  # what exists opens
        await q.put("hi")
        assert q.qsize() == 1


async def test_create_false_leaves_an_empty_file_as_it_was(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with pytest.raises(chute.QueueNotFound, match=f"no queue 'q' in {path}; no queues here"):
        await chute.open(f"sqlite:///{path}", "q", create=False)
    assert path.read_bytes() == b""  # no tables written into it
    assert SqliteQueue.queue_names(str(path)) == []


async def test_queue_names_creates_nothing_and_refuses_a_foreign_file(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path / 'q.db'}"
    for name in ("b", "c", "a"):
        async with chute.open(url, name):
            pass
    assert await asyncio.to_thread(queue_names, url, codec="pickle") == ["a", "b", "c"]
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    with pytest.raises(chute.ChuteError, match="not a chute queue file"):
        SqliteQueue.queue_names(str(other))


def test_a_look_on_the_sync_path_does_not_change_bounds(tmp_path: Any):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with chute.open(url, "q", maxsize=3, max_deliveries=1) as q:
        with chute.open(url, "q", create=False) as look:
            assert look.maxsize == 3
        assert q.maxsize == 3
        q.sync.put("x")
        with q.sync.reserve() as job:
            job.nack()
        assert job.outcome == "dead"
