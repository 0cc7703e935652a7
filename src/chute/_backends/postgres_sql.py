"""The PostgreSQL transport's schema: its tables, installing or upgrading
them (with the functions of ``postgres_functions.py``, one per change, in
one script), and finding or declaring a queue in them. Everything lives
in chute's own schema (``chute`` unless the queue says otherwise):

``chute_version``  the schema's version: a newer one is refused, an older one upgraded.
``chute_queue``    one row per queue: its id, name, bounds and state.
``chute_item``     the items: ready (``visible_at`` NULL), on a lease
                   (``leased`` 1, until ``visible_at``), or given back with a
                   delay (``leased`` 2, claimable at ``visible_at``).
``chute_dead``     the dead letters, with why each died.
``chute_count``    the counters (put, got, added, done), one row per queue and
                   *shard*: each connection adds to the row of its backend's
                   pid modulo 64, so that producers and consumers on many
                   connections never wait for each other's row lock (one row
                   per queue would serialise every put and every ack through
                   the commit's WAL flush). Readers sum the shards.
``chute_mark``     per queue and schedule, the last slot put (``chute.every``).
``chute_listener`` the clients with waiters that sleep until notified: one
                   row per queue and client, with its ``LISTEN`` connection's
                   server pid (a row whose pid is gone is dropped).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

from .._contract import Unset
from .._exceptions import ChuteError, QueueNotFound
from .postgres_functions import FUNCTIONS
from .postgres_link import place

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the postgresql:// transport needs asyncpg: pip install 'chute[postgres]'"
    ) from exc

if TYPE_CHECKING:
    from .postgres_link import Store

__all__ = ["SCHEMA_VERSION", "TABLES", "declare", "install", "install_sql", "lock_key", "names_in"]

#: The version of the tables and functions below.
SCHEMA_VERSION = 5

TABLES = (
    "chute_version",
    "chute_queue",
    "chute_item",
    "chute_dead",
    "chute_count",
    "chute_listener",
    "chute_mark",
)


def lock_key(schema: str) -> int:
    """The first half of the advisory lock of a queue's puts (the queue's id
    is the second): the same in every process, distinct per schema."""
    return zlib.crc32(schema.encode()) & 0x7FFFFFFF


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def install_sql(schema: str) -> str:
    """The tables, indexes and functions of ``schema`` (idempotent: run in a
    transaction by the first client to open a queue there)."""
    channel = "chute." + schema
    return (
        _INSTALL.replace("@S", quote(schema))
        .replace("@CHANNEL", "'" + channel.replace("'", "''") + "'")
        .replace("@LOCK", str(lock_key(schema)))
    )


# -- opening ---------------------------------------------------------------------------


async def install(conn: Any, store: Store, create: bool) -> bool:
    """Make sure chute's schema is there, of a version this chute reads;
    False if it is not there and ``create`` is off (nothing made)."""
    schema, s = store.schema, quote(store.schema)
    version = f"{s}.chute_version"
    if await conn.fetchval("SELECT to_regclass($1)", version) is not None:
        try:
            found = await conn.fetchval(f"SELECT max(version) FROM {version}")
        except asyncpg.UndefinedColumnError:
            found = None
        if found is None:
            raise ChuteError(
                f"PostgreSQL at {store.where}: the table {schema}.chute_version was not made "
                "by chute; choose another schema= for chute's tables"
            )
        if found > SCHEMA_VERSION:
            raise ChuteError(
                f"chute's schema {schema!r} on PostgreSQL at {store.where} was made by a newer "
                f"chute (version {found}); this one reads version {SCHEMA_VERSION}: upgrade chute"
            )
        if found < SCHEMA_VERSION:
            await _upgrade(conn, schema)
        return True
    alien = await conn.fetchval(
        "SELECT min(tablename) FROM pg_tables WHERE schemaname = $1 AND tablename = ANY($2)",
        schema,
        list(TABLES),
    )
    if alien is not None:
        raise ChuteError(
            f"PostgreSQL at {store.where}: a table {schema}.{alien} exists that chute did not "
            "make; choose another schema= for chute's tables"
        )
    if not create:
        return False
    async with conn.transaction():
        # One client installs; the others wait here, then find it made.
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", lock_key(schema))
        if await conn.fetchval("SELECT to_regclass($1)", version) is not None:
            return True
        if await conn.fetchval("SELECT to_regnamespace($1)", schema) is None:
            await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute(install_sql(schema))
        await conn.execute(f"INSERT INTO {version} VALUES ($1)", SCHEMA_VERSION)
    return True


async def _upgrade(conn: Any, schema: str) -> None:
    """Bring an older schema to this version: its new tables added, every
    function replaced (clients of the older chute then wait on polling)."""
    version = f"{quote(schema)}.chute_version"
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", lock_key(schema))
        if await conn.fetchval(f"SELECT max(version) FROM {version}") >= SCHEMA_VERSION:
            return  # another client upgraded it meanwhile
        await conn.execute(install_sql(schema))
        await conn.execute(f"INSERT INTO {version} VALUES ($1)", SCHEMA_VERSION)


async def names_in(conn: Any, schema: str) -> list[str]:
    table = f"{quote(schema)}.chute_queue"
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return []
    return [r[0] for r in await conn.fetch(f"SELECT name FROM {table} ORDER BY name")]


async def declare(
    conn: Any,
    store: Store,
    name: str,
    create: bool,
    maxsize: int | Unset,
    max_deliveries: int | Unset | None,
) -> int:
    """The queue's id, the bounds passed stored; ``QueueNotFound`` (nothing
    created) if it is not there and ``create`` is off."""
    table = f"{quote(store.schema)}.chute_queue"
    if await install(conn, store, create) and create:
        await conn.execute(
            f"INSERT INTO {table} (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name
        )
    found = None
    if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
        found = await conn.fetchval(
            f"UPDATE {table} SET maxsize = coalesce($2, maxsize), "
            "max_deliveries = CASE WHEN $3 THEN $4::int ELSE max_deliveries END "
            "WHERE name = $1 RETURNING id",
            name,
            None if isinstance(maxsize, Unset) else maxsize,
            not isinstance(max_deliveries, Unset),
            None if isinstance(max_deliveries, Unset) else max_deliveries,
        )
    if found is None:
        names = await names_in(conn, store.schema)
        there = f"queues there: {', '.join(names)}" if names else "no queues there"
        p = place(store.url)
        schema = "" if store.schema == "chute" else f" (schema {store.schema!r})"
        raise QueueNotFound(f"no queue {name!r} in {p['where']}/{p['database']}{schema}; {there}")
    return int(found)


#: The tables and indexes, and the dropping of older versions' functions
#: whose arguments changed (before they are made again, by ``FUNCTIONS``).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS @S.chute_version (version int NOT NULL);
CREATE TABLE IF NOT EXISTS @S.chute_queue (
    id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    maxsize int NOT NULL DEFAULT 0,
    max_deliveries int,
    state smallint NOT NULL DEFAULT 0,
    peak bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS @S.chute_item (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    queue int NOT NULL,
    data bytea NOT NULL,
    deliveries int NOT NULL DEFAULT 0,
    token bigint NOT NULL DEFAULT 0,
    leased smallint NOT NULL DEFAULT 0,
    visible_at double precision,
    last_error text
);
-- Older versions' functions whose arguments or results changed since.
DROP FUNCTION IF EXISTS @S.chute_put(int, bytea[], text);
DROP FUNCTION IF EXISTS @S.chute_put(int, bytea[], double precision, int, text, text);
DROP FUNCTION IF EXISTS @S.chute_counts(int);
DROP FUNCTION IF EXISTS @S.chute_claim(int, int, double precision, text);
DROP FUNCTION IF EXISTS @S.chute_give_back(int, bigint[], bigint[], bytea[], int[], boolean, text);
DROP FUNCTION IF EXISTS @S.chute_give_back(int, bigint[], bigint[], bytea[], int[], boolean, int[],
                                           text[], text);
DROP FUNCTION IF EXISTS @S.chute_requeue_dead(int, text);
-- Added in version 3: a put's priority and key ("IF NOT EXISTS": the
-- upgrade of an older schema runs this script again).
ALTER TABLE @S.chute_item ADD COLUMN IF NOT EXISTS priority int NOT NULL DEFAULT 0;
ALTER TABLE @S.chute_item ADD COLUMN IF NOT EXISTS key text;
DROP INDEX IF EXISTS @S.chute_item_ready;  -- version 1's, in id order only
CREATE INDEX IF NOT EXISTS chute_item_order ON @S.chute_item (queue, priority, id)
    WHERE visible_at IS NULL;
CREATE INDEX IF NOT EXISTS chute_item_due ON @S.chute_item (queue, visible_at)
    WHERE visible_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS chute_item_scheduled ON @S.chute_item (queue, visible_at)
    WHERE leased = 3;
CREATE UNIQUE INDEX IF NOT EXISTS chute_item_key ON @S.chute_item (queue, key)
    WHERE key IS NOT NULL;
-- Added in version 5: when an item is claimable from (put, or due; kept when
-- it is given back), for the age of the oldest ready item. Items of an older
-- version count as put when it was upgraded: the default, evaluated once by
-- this statement and kept for the rows there (no row is rewritten); those
-- put with a delay, from when they come due (for a scheduled item, ready_at
-- is visible_at: the UPDATE finds none to change but after an upgrade).
ALTER TABLE @S.chute_item ADD COLUMN IF NOT EXISTS ready_at double precision
    DEFAULT extract(epoch FROM now())::double precision;
UPDATE @S.chute_item SET ready_at = visible_at
WHERE leased = 3 AND ready_at IS DISTINCT FROM visible_at;
CREATE TABLE IF NOT EXISTS @S.chute_dead (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    queue int NOT NULL,
    data bytea NOT NULL,
    deliveries int NOT NULL,
    died_at double precision NOT NULL,
    reason text NOT NULL,
    last_error text
);
CREATE INDEX IF NOT EXISTS chute_dead_queue ON @S.chute_dead (queue, id);
CREATE TABLE IF NOT EXISTS @S.chute_listener (
    queue int NOT NULL,
    sender text NOT NULL,
    pid int NOT NULL,
    PRIMARY KEY (queue, sender)
);
CREATE TABLE IF NOT EXISTS @S.chute_mark (
    queue int NOT NULL,
    name text NOT NULL,
    slot bigint NOT NULL,
    PRIMARY KEY (queue, name)
);
CREATE TABLE IF NOT EXISTS @S.chute_count (
    queue int NOT NULL,
    shard int NOT NULL,
    put bigint NOT NULL DEFAULT 0,
    got bigint NOT NULL DEFAULT 0,
    added bigint NOT NULL DEFAULT 0,
    done bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, shard)
);
"""

#: The whole script: the tables, then the functions that use them.
_INSTALL = _SCHEMA + FUNCTIONS
