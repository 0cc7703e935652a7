"""A SQLite queue keeps when each item became ready (the age of the oldest
one) and pages its dead letters: a file of schema 3 is migrated in place,
and the looks a dashboard makes are index seeks."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

import chute
from chute._backends.sqlite_file import SCHEMA_VERSION
from chute._backends.sqlite_sql import DEAD_LETTERS, OLDEST

pytestmark = pytest.mark.timeout(120)

GAP = 0.2
DUE = 0.5


def url(tmp_path, name: str = "q.db") -> str:
    return f"sqlite:///{tmp_path / name}"


async def test_a_file_of_schema_3_counts_its_items_from_the_migration(tmp_path):
    path = tmp_path / "old.db"
    async with chute.open(f"sqlite:///{path}", "q", max_deliveries=1) as q:
        await q.put("poison")
        job = await q.reserve(timeout=10)
        await job.anack()
        await q.put_batch(["first", "second"])
        await q.put("later", delay=3600)
    conn = sqlite3.connect(path, isolation_level=None)
    try:  # as schema 3 left it: no put times
        conn.execute("ALTER TABLE chute_item DROP COLUMN ready_at")
        conn.execute("PRAGMA user_version=3")
    finally:
        conn.close()
    migrated = time.time()
    async with chute.open(f"sqlite:///{path}", "q", create=False) as q:
        s = await q.astatistics()
        assert (s.size, s.scheduled, s.dead_lettered) == (3, 1, 1)
        assert s.oldest_ready_age is not None
        assert 0 <= s.oldest_ready_age <= time.time() - migrated
        [dead] = await q.adead_letters()
        assert (dead.item, dead.id) == ("poison", "1")
        assert await q.get_batch(5) == ["first", "second"]
        assert (await q.astatistics()).oldest_ready_age is None  # "later" is not due
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        # The delayed item counts from when it comes due.
        assert conn.execute(
            "SELECT ready_at = visible_at FROM chute_item WHERE leased = 3"
        ).fetchall() == [(1,)]
    finally:
        conn.close()


async def test_an_item_behind_a_delayed_one_that_came_due_is_still_the_oldest(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        await q.put("due later", delay=DUE)
        await q.put("plain")  # put before the first came due: older as ready
        await q.put("urgent", priority=-1)
        await asyncio.sleep(DUE + GAP)
        # This get makes "due later" ready, at the head of priority 0 (its id
        # is the smaller), and takes "urgent".
        assert await q.get(timeout=10) == "urgent"
        s = await q.astatistics()
        assert s.oldest_ready_age is not None
        # "plain"'s age (from its put), not "due later"'s (from when it came due).
        assert s.oldest_ready_age >= DUE + GAP - 0.01
        assert await q.get_batch(2) == ["due later", "plain"]


async def test_a_plain_get_given_back_keeps_its_put_time(tmp_path):
    async with chute.open(url(tmp_path), "q") as q:
        await q.put("kept")
        await asyncio.sleep(GAP)
        backend = q._backend
        claimed = await backend.run(backend.claim(1, lease=None))
        assert (await q.astatistics()).oldest_ready_age is None
        await backend.run(backend.give_back(claimed.records, leased=False))
        s = await q.astatistics()
        assert s.size == 1
        assert s.oldest_ready_age is not None
        assert s.oldest_ready_age >= GAP


def _plan(path, sql: str, *args: object) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
    finally:
        conn.close()


def test_the_oldest_ready_item_and_a_dead_page_are_found_by_index_seeks(tmp_path):
    with chute.open(url(tmp_path), "q") as q:
        q.sync.put(1)
    path = tmp_path / "q.db"
    oldest = _plan(path, OLDEST, "q", time.time())
    touching = [step for step in oldest if "chute_item" in step]
    assert len(touching) >= 5, oldest  # the skip scan, the heads, the late and due ones
    assert all(step.startswith("SEARCH") for step in touching), oldest
    assert not any("TEMP B-TREE" in step for step in oldest), oldest
    for order in ("", " DESC"):
        page = _plan(path, DEAD_LETTERS + f" ORDER BY id{order} LIMIT ? OFFSET ?", "q", 50, 9)
        assert page == ["SEARCH chute_dead USING INDEX chute_dead_queue (queue=?)"], page
