"""PostgreSQL keeps when each item became ready (for the age of the oldest
one) and pages its dead letters: a schema of version 4 is upgraded with its
items kept, and the looks a dashboard makes stay index seeks."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import asyncpg
import pytest

import chute
from chute._backends.postgres_sql import SCHEMA_VERSION

pytestmark = pytest.mark.timeout(120)

_schemas = itertools.count()


@pytest.fixture
def schema() -> str:
    return f"pt{os.getpid()}_{next(_schemas)}"


def _run(url: str, script: str, *args: Any) -> list[tuple[Any, ...]]:
    """``script``'s rows (or run it, without ``args``), from a test with no loop."""

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            if not args and ";" in script:
                await conn.execute(script)
                return []
            return [tuple(row) for row in await conn.fetch(script, *args)]
        finally:
            await conn.close(timeout=10)

    return asyncio.run(run())


def test_a_version_4_schema_is_upgraded_and_its_items_count_from_then(server, schema, name):
    with chute.open(server.url, name, schema=schema, max_deliveries=1) as q:
        q.sync.put("poison")
        with pytest.raises(RuntimeError), q.sync.reserve():
            raise RuntimeError("its only try")
        q.sync.put("kept")
        q.sync.put("later", delay=3600)
    # As version 4 left it: no put times, and the functions of then.
    s = schema
    _run(
        server.url,
        f"""
        ALTER TABLE {s}.chute_item DROP COLUMN ready_at;
        DROP FUNCTION {s}.chute_counts(int, boolean);
        CREATE FUNCTION {s}.chute_counts(q int) RETURNS TABLE (maxsize int)
            LANGUAGE sql AS 'SELECT 0';
        DROP FUNCTION {s}.chute_requeue_dead(int, bigint[], text);
        CREATE FUNCTION {s}.chute_requeue_dead(q int, sender text) RETURNS int
            LANGUAGE sql AS 'SELECT 0';
        DROP FUNCTION {s}.chute_give_back(int, bigint[], bigint[], bytea[], int[], boolean,
                                          int[], text[], double precision[], text);
        CREATE FUNCTION {s}.chute_give_back(q int, ids bigint[], tokens bigint[],
                records bytea[], deliveries int[], leased boolean, priorities int[],
                keys text[], sender text) RETURNS void LANGUAGE sql AS '';
        UPDATE {s}.chute_version SET version = 4;
        """,
    )
    upgraded = time.time()
    with chute.open(server.url, name, schema=schema) as q:
        assert _run(server.url, f"SELECT max(version) FROM {s}.chute_version") == [
            (SCHEMA_VERSION,)
        ]
        made = _run(
            server.url,
            "SELECT p.pronargs FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = $1 AND p.proname = ANY($2) ORDER BY p.proname",
            schema,
            ["chute_counts", "chute_give_back", "chute_requeue_dead"],
        )
        assert made == [(2,), (10,), (3,)]  # the old ones dropped, the new ones made
        # The items stored before count from the upgrade; the delayed one
        # from when it comes due.
        stats = q.sync.statistics()
        assert (stats.size, stats.scheduled, stats.dead_lettered) == (2, 1, 1)
        assert stats.oldest_ready_age is not None
        assert 0 <= stats.oldest_ready_age <= time.time() - upgraded
        assert _run(
            server.url,
            f"SELECT ready_at = visible_at FROM {s}.chute_item WHERE leased = 3",
        ) == [(True,)]
        [dead] = q.dead_letters()
        assert dead.item == "poison"
        assert dead.id is not None
        assert q.requeue_dead([dead.id]) == 1
        assert q.sync.get_batch(5, timeout=10) == ["kept", "poison"]
        assert q.statistics().oldest_ready_age is None


def _plan(url: str, schema: str, query: str, *args: Any) -> str:
    rows = _run(url, f"EXPLAIN {query}".replace("@S", schema), *args)
    return "\n".join(row[0] for row in rows)


def test_the_oldest_ready_item_and_a_dead_page_are_found_by_index_seeks(server, schema, name):
    with chute.open(server.url, name, schema=schema) as q:
        (queue,) = _run(server.url, f"SELECT id FROM {schema}.chute_queue WHERE name = $1", name)
        # Enough rows that reading them all would cost the planner more
        # than seeking (written straight into the tables: quicker).
        _run(
            server.url,
            f"""
            INSERT INTO {schema}.chute_item (queue, data, priority, ready_at)
            SELECT {queue[0]}, '\\x00', g % 5, g FROM generate_series(1, 50000) g;
            INSERT INTO {schema}.chute_dead (queue, data, deliveries, died_at, reason)
            SELECT {queue[0]}, '\\x00', 1, g, 'failed' FROM generate_series(1, 20000) g;
            ANALYZE {schema}.chute_item; ANALYZE {schema}.chute_dead;
            """,
        )
        assert q.statistics().size == 50000
        plan = _plan(server.url, schema, _LANES, queue[0])
        assert "Seq Scan" not in plan, plan
        assert "Index" in plan, plan
        plan = _plan(server.url, schema, _DEAD_PAGE, queue[0], 50, 10000)
        assert "Seq Scan" not in plan, plan


#: The skip scan of ``chute_counts`` (its first part), as a plain statement.
_LANES = """
WITH RECURSIVE lane (p, n) AS (
    (SELECT i.priority, 1 FROM @S.chute_item i
     WHERE i.queue = $1 AND i.visible_at IS NULL ORDER BY i.priority LIMIT 1)
    UNION ALL
    SELECT (SELECT i.priority FROM @S.chute_item i
            WHERE i.queue = $1 AND i.visible_at IS NULL AND i.priority > l.p
            ORDER BY i.priority LIMIT 1), l.n + 1
    FROM lane l WHERE l.p IS NOT NULL AND l.n < 1000
)
SELECT (SELECT min(h.ready_at) FROM (
            SELECT i.ready_at FROM @S.chute_item i
            WHERE i.queue = $1 AND i.visible_at IS NULL AND i.priority = l.p
            ORDER BY i.id LIMIT 8) h)
FROM lane l WHERE l.p IS NOT NULL
"""
#: The page of ``PostgresBackend.dead_letters``.
_DEAD_PAGE = """
SELECT id, data FROM @S.chute_dead WHERE id IN (
    SELECT id FROM @S.chute_dead WHERE queue = $1 ORDER BY id LIMIT $2 OFFSET $3)
ORDER BY id
"""
