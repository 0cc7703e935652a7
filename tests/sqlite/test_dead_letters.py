"""A SQLite queue's dead letters keep why they died; delayed items; a file
written by the previous release (schema 1) opens, migrated in place."""

from __future__ import annotations

import sqlite3
import time

import pytest

import chute
from chute._backends.sqlite_file import APPLICATION_ID, SCHEMA_VERSION

pytestmark = pytest.mark.timeout(120)


def url(tmp_path, name: str = "q.db") -> str:
    return f"sqlite:///{tmp_path / name}"


async def test_a_lease_that_runs_out_keeps_the_last_error_and_says_so(tmp_path):
    async with chute.open(url(tmp_path), "q", visibility_timeout=0.1, max_deliveries=2) as q:
        await q.put("flaky")
        job = await q.reserve(timeout=10)
        job.nack(error=KeyError("first try"))
        assert job.outcome == "retried"
        await q.reserve(timeout=10)  # the last try: its consumer vanishes
        with pytest.raises(TimeoutError):
            await q.get(timeout=0.5)  # finds the lease ran out
        (dead,) = q.dead_letters()
        assert (dead.item, dead.deliveries, dead.reason) == ("flaky", 2, "lease expired")
        assert (dead.error_type, dead.error) == ("KeyError", "'first try'")
        assert dead.died_at <= time.time()
        assert q.statistics().unfinished_tasks == 0


async def test_purge_dead_returns_the_records_oldest_first(tmp_path):
    async with chute.open(url(tmp_path), "q", max_deliveries=1) as q:
        await q.put_batch(["a", "b"])
        for exc in (ValueError("for a"), None):
            job = await q.reserve(timeout=10)
            await job._settle_async("nack", None, error=exc)  # as a worker settles
            assert job.outcome == "dead"
        first, second = q.purge_dead()
        assert (first.item, first.error_type, first.error) == ("a", "ValueError", "for a")
        assert (second.item, second.error_type, second.traceback) == ("b", None, None)
        assert q.dead_letters() == []
        assert q.statistics().dead_lettered == 0


def test_the_sync_face_sets_outcomes_and_keeps_the_error(tmp_path):
    with chute.open(url(tmp_path), "q", max_deliveries=2) as q:
        s = q.sync
        s.put_batch(["ok", "bad"])
        with s.reserve() as job:
            pass
        assert job.outcome == "acked"
        for expected in ("retried", "dead"):
            with pytest.raises(ZeroDivisionError), s.reserve() as job:
                1 / 0  # noqa: B018
            assert job.outcome == expected
        (dead,) = q.dead_letters()
        assert (dead.item, dead.reason, dead.error_type) == ("bad", "failed", "ZeroDivisionError")
        assert dead.to_dict()["error"] == "division by zero"


async def test_a_delayed_item_is_counted_as_delayed_until_it_comes_due(tmp_path):
    async with chute.open(url(tmp_path), "q", max_deliveries=5) as q:
        await q.put_batch(["later", "now"])
        job = await q.reserve(timeout=10)
        job.nack(delay=0.3, error=RuntimeError("try again soon"))
        assert job.outcome == "retried"
        s = q.statistics()
        assert (s.delayed, s.in_flight, s.size) == (1, 1, 1)
        assert await q.get() == "now"
        with pytest.raises(chute.QueueEmpty):
            q.get_nowait()  # not claimable yet
        again = await q.reserve(timeout=10)  # woken when it comes due
        assert (again.item, again.deliveries) == ("later", 2)
        assert q.statistics().delayed == 0
        again.nack(delay=0)
        assert q.statistics().delayed == 0


# -- a file of the previous release --------------------------------------------------------

#: The tables chute wrote with schema 1 (the release before dead letters kept why).
_SCHEMA_1 = """
CREATE TABLE chute_queue (
    name TEXT PRIMARY KEY,
    maxsize INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    max_deliveries INTEGER,
    stored INTEGER NOT NULL DEFAULT 0,
    unfinished INTEGER NOT NULL DEFAULT 0,
    total_put INTEGER NOT NULL DEFAULT 0,
    total_got INTEGER NOT NULL DEFAULT 0,
    peak INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE chute_item (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    data BLOB NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL DEFAULT 0,
    token INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX chute_item_ready ON chute_item (queue, id) WHERE leased = 0;
CREATE INDEX chute_item_leased ON chute_item (queue, visible_at) WHERE leased = 1;
CREATE TABLE chute_dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    data BLOB NOT NULL,
    deliveries INTEGER NOT NULL,
    died_at REAL NOT NULL
);
CREATE INDEX chute_dead_queue ON chute_dead (queue);
"""


def _old_file(path) -> None:
    """A file as schema 1 left it: queue 'q' (maxsize 10, max_deliveries 2)
    with two items waiting, one given back with a delay that has run out,
    and one dead letter."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(_SCHEMA_1)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=1")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "INSERT INTO chute_queue (name, maxsize, max_deliveries, stored, unfinished, "
        "total_put, dead) VALUES ('q', 10, 2, 3, 3, 4, 1)"
    )
    conn.executemany(
        "INSERT INTO chute_item (queue, data, leased, visible_at, token, deliveries) "
        "VALUES ('q', ?, ?, ?, ?, ?)",
        [(b'"first"', 0, 0, 0, 0), (b'"delayed"', 1, 1.0, 1, 1), (b'"second"', 0, 0, 0, 0)],
    )
    conn.execute(
        "INSERT INTO chute_dead (queue, data, deliveries, died_at) VALUES ('q', ?, 2, ?)",
        (b'"old dead"', 1700000000.0),
    )
    conn.close()


async def test_a_file_of_the_previous_schema_is_migrated_in_place(tmp_path):
    path = tmp_path / "old.db"
    _old_file(path)
    opened = time.time()
    async with chute.open(f"sqlite:///{path}", "q", create=False) as q:
        # Opened as a look (create=False, no bounds): the stored ones hold.
        assert (q.maxsize, q.unfinished_tasks) == (10, 3)
        # Its items kept no put time: they count from the migration.
        s = await q.astatistics()
        assert s.size == 3
        assert s.oldest_ready_age is not None
        assert 0 <= s.oldest_ready_age <= time.time() - opened
        (old,) = q.dead_letters()
        assert (old.item, old.deliveries, old.died_at) == ("old dead", 2, 1700000000.0)
        assert old.reason == "failed"
        assert (old.error_type, old.error, old.traceback) == (None, None, None)
        assert await q.get_batch(3) == ["first", "delayed", "second"]
        # What schema 2 adds works on the migrated file.
        await q.put("new")
        job = await q.reserve(timeout=10)
        job.nack(error=OSError("disk"))
        job = await q.reserve(timeout=10)
        job.nack()
        assert job.outcome == "dead"  # max_deliveries 2, kept from the old file
        new = q.dead_letters()[-1]
        assert (new.item, new.error_type, new.error) == ("new", "OSError", "disk")
        # And what schema 3 adds: priorities, keys and delayed puts.
        assert await q.put("keyed", key="k") is True
        assert await q.put("keyed again", key="k") is False
        await q.put("urgent", priority=-1)
        await q.put("later", delay=60)
        assert await q.get_batch(3) == ["urgent", "keyed"]
        assert (await q.astatistics()).scheduled == 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    finally:
        conn.close()


def test_two_processes_opening_an_old_file_at_once_migrate_it_once(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "old.db"
    _old_file(path)
    code = (
        "import chute\n"
        f"with chute.open({f'sqlite:///{path}'!r}, 'q', create=False) as q:\n"
        "    print(len(q.dead_letters()))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert [out.strip() for out in outs] == ["1", "1", "1"]
