"""The SQLite backend's statements, and the functions of a connection that
its calls share: a queue's row and bounds, moving an item to the dead
letters and taking dead letters out. The tables they read are made in
``sqlite_db.py``; the calls that run them, and what the values of
``chute_item.leased`` mean, are in ``sqlite.py``.
"""

from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple

from .._contract import UNSET, Unset
from .._durable.backend import QueueState
from .._exceptions import ChuteError, QueueNotFound

__all__ = [
    "CHUNK",
    "COUNT_LEASED",
    "COUNT_PUT",
    "COUNT_TAKEN",
    "DEAD_COLUMNS",
    "DEAD_LETTERS",
    "DUE_SCHEDULED",
    "INSERT",
    "INSERT_WITH",
    "LATE_ROWS",
    "LEASE_READY",
    "NEXT_DUE",
    "OLDEST",
    "OUT_COUNTS",
    "READY_ROWS",
    "ROOM",
    "TAKE_READY",
    "bound_columns",
    "count_settled",
    "in_order",
    "marks",
    "no_queue",
    "queue_row",
    "set_bounds",
    "take_dead",
    "to_dead",
]

#: ``ready_at``: when the item is claimable from (put, or due), for the age
#: of the oldest ready item; kept when it is given back.
INSERT = "INSERT INTO chute_item (queue, data, ready_at) VALUES (?, ?, ?)"
#: A put with a delay, a priority or a key.
INSERT_WITH = (
    "INSERT INTO chute_item (queue, data, leased, visible_at, priority, key, ready_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
#: What a claim reads of an item: its key, data, deliveries, token, state
#: (given as a constant), priority, put key and when it became ready.
_COLUMNS = "id, data, deliveries, token, {state}, priority, key, ready_at"
#: The first claimable items in the queue's order (priority, then id), ?1
#: the queue, after (priority ?2, id ?5), at most ?3, ?4 the time: not
#: leased (in order on their own index, however many are out on leases),
#: leases that ran out, and delays that did (each on its own index), merged
#: in Python. Three plain statements, not one UNION ALL ordered: that one
#: sorts each part in a temporary B-tree, whose memory, freed at the top of
#: the thread's heap, glibc hands back to the system after every claim
#: (measured: 150-1,400 us a claim instead of 7, depending on the process's
#: heap). Items put with a delay that came due are made ready first (one
#: UPDATE on their own index), so that their priority counts exactly.
READY_ROWS = (
    f"SELECT {_COLUMNS.format(state=0)} FROM chute_item "
    "WHERE queue = ?1 AND leased = 0 AND (priority, id) > (?2, ?5) ORDER BY priority, id LIMIT ?3"
)
LATE_ROWS = tuple(
    f"SELECT {_COLUMNS.format(state=state)} FROM chute_item WHERE queue = ?1 AND leased = {state} "
    "AND visible_at <= ?4 AND (priority, id) > (?2, ?5) ORDER BY priority, id LIMIT ?3"
    for state in (1, 2)
)
#: The first ready items (?1 the queue, at most ?2) taken at once, when no
#: lease or delay can have run out: leased until ?3, or deleted. Their
#: columns as a claim reads them (after the update: deliveries and token
#: already bumped), in no particular order.
_FIRST_READY = (
    "WHERE id IN (SELECT id FROM chute_item WHERE queue = ?1 AND leased = 0 "
    f"ORDER BY priority, id LIMIT ?2) RETURNING {_COLUMNS.format(state=0)}"
)
LEASE_READY = (
    "UPDATE chute_item SET leased = 1, visible_at = ?3, token = token + 1, "
    f"deliveries = deliveries + 1 {_FIRST_READY}"
)
TAKE_READY = f"DELETE FROM chute_item {_FIRST_READY}"
#: The same for one item (?2 is 1): ``id = (SELECT ...)``, a scalar
#: subquery, instead of ``IN``, whose list SQLite builds in a temporary
#: index (a fifth of the statement's time for one item, measured).
LEASE_ONE = LEASE_READY.replace("WHERE id IN (SELECT", "WHERE id = (SELECT")
TAKE_ONE = TAKE_READY.replace("WHERE id IN (SELECT", "WHERE id = (SELECT")
DUE_SCHEDULED = (
    "UPDATE chute_item SET leased = 0, visible_at = 0 "
    "WHERE queue = ?1 AND leased = 3 AND visible_at <= ?2"
)
#: Items out of the queue for now, ?1 the queue and ?2 the time: on a lease,
#: and given back with a delay (each counted on its own index); and items
#: put with a delay, not due yet (in the queue).
OUT_COUNTS = (
    "SELECT (SELECT count(*) FROM chute_item WHERE queue = ?1 AND leased = 1 AND visible_at > ?2), "
    "(SELECT count(*) FROM chute_item WHERE queue = ?1 AND leased = 2 AND visible_at > ?2), "
    "(SELECT count(*) FROM chute_item WHERE queue = ?1 AND leased = 3 AND visible_at > ?2)"
)
_OUT_SUM = (
    "(SELECT count(*) FROM chute_item WHERE queue = ?1 AND leased = 1 AND visible_at > ?2) + "
    "(SELECT count(*) FROM chute_item WHERE queue = ?1 AND leased = 2 AND visible_at > ?2)"
)
#: A queue's state, bound, and items stored and not out: what a put looks at.
ROOM = f"SELECT state, maxsize, stored - ({_OUT_SUM}) FROM chute_queue WHERE name = ?1"
#: A put of ?3 items (?1 the queue, ?2 the time) counted, if the queue is
#: open and they fit: ROOM's look and the count's update in one statement.
#: A plain put runs it first (no row changed: it looks with ROOM to say
#: why); a put with a delay, a priority or a key after its looks. ``stored``
#: on the right is the value before the update.
COUNT_PUT = (
    "UPDATE chute_queue SET stored = stored + ?3, unfinished = unfinished + ?3, "
    f"total_put = total_put + ?3, peak = max(peak, stored + ?3 - ({_OUT_SUM})) "
    f"WHERE name = ?1 AND state = 0 AND (maxsize = 0 OR stored + ?3 - ({_OUT_SUM}) <= maxsize)"
)
_IMMEDIATE = int(QueueState.IMMEDIATE)
#: ?1 items claimed from queue ?2, leased (or deleted: ``stored`` too),
#: unless it was shut down at once (no row changed: the claim looks why).
#: A guard and a row count, not ``RETURNING state``: half the statement's time.
COUNT_LEASED = (
    f"UPDATE chute_queue SET total_got = total_got + ?1 WHERE name = ?2 AND state < {_IMMEDIATE}"
)
COUNT_TAKEN = (
    "UPDATE chute_queue SET stored = stored - ?1, total_got = total_got + ?1 "
    f"WHERE name = ?2 AND state < {_IMMEDIATE}"
)
#: When the next lease or delay runs out (each on its own index).
NEXT_DUE = " UNION ALL ".join(
    f"SELECT min(visible_at) FROM chute_item WHERE queue = ?1 AND leased = {state}"
    for state in (1, 2, 3)
)
DEAD_COLUMNS = "id, data, deliveries, died_at, reason, last_error"
DEAD_LETTERS = f"SELECT {DEAD_COLUMNS} FROM chute_dead WHERE queue = ?"
#: When the oldest item claimable now (?1 the queue, ?2 the time) became
#: ready, in index seeks only, however many items wait: for each priority
#: (at most _LANES, found by a skip scan of the order index), the earliest
#: ready time among its first _HEAD items in id order; the earliest due
#: time of items put with a delay that came due (not yet made ready by a
#: claim); and that of items whose lease or delay ran out (few: they are
#: claimed first). Ids grow with put times, so in a priority only items
#: put with a delay, which came due later than they were put, can stand
#: before an older one: looking past the first one covers them (all but
#: more than _HEAD of them together at the head: then the age says less).
_LANES, _HEAD = 1000, 8
OLDEST = f"""
WITH RECURSIVE lane(p, n) AS (
    SELECT (SELECT priority FROM chute_item WHERE queue = ?1 AND leased = 0
            ORDER BY priority LIMIT 1), 1
    UNION ALL
    SELECT (SELECT priority FROM chute_item WHERE queue = ?1 AND leased = 0
            AND priority > lane.p ORDER BY priority LIMIT 1), n + 1
    FROM lane WHERE lane.p IS NOT NULL AND lane.n < {_LANES}
)
SELECT min(at) FROM (
    SELECT (SELECT min(ready_at) FROM chute_item WHERE id IN (
                SELECT id FROM chute_item WHERE queue = ?1 AND leased = 0
                AND priority = lane.p ORDER BY id LIMIT {_HEAD})) AS at
    FROM lane WHERE lane.p IS NOT NULL
    UNION ALL
    SELECT min(visible_at) FROM chute_item WHERE queue = ?1 AND leased = 3 AND visible_at <= ?2
    UNION ALL
    SELECT min(ready_at) FROM chute_item WHERE queue = ?1 AND leased = 1 AND visible_at <= ?2
    UNION ALL
    SELECT min(ready_at) FROM chute_item WHERE queue = ?1 AND leased = 2 AND visible_at <= ?2
)
"""
CHUNK = 500  # ids per statement: far below any SQLite's limit on variables


def in_order(row: tuple[Any, ...]) -> tuple[int, int]:
    """A claimed row's place in the queue's order: (priority, id)."""
    return row[5], row[0]


def marks(chunk: list[int]) -> str:
    return ",".join("?" * len(chunk))


class _Stored(NamedTuple):
    """A queue's row of ``chute_queue``: its bounds, state and counters."""

    maxsize: int
    state: int
    max_deliveries: int | None
    stored: int
    unfinished: int
    total_put: int
    total_got: int
    peak: int
    dead: int


def queue_row(c: sqlite3.Connection, name: str) -> _Stored:
    row = c.execute(
        "SELECT maxsize, state, max_deliveries, stored, unfinished, total_put, total_got, "
        "peak, dead FROM chute_queue WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        raise ChuteError(f"no queue named {name!r} in this file")
    return _Stored(*row)


def bound_columns(
    maxsize: int | Unset, max_deliveries: int | Unset | None
) -> dict[str, int | None]:
    """The bounds passed (checked by the core): the columns to set."""
    bounds: dict[str, int | None] = {}
    if maxsize is not UNSET:
        bounds["maxsize"] = maxsize
    if max_deliveries is not UNSET:
        bounds["max_deliveries"] = max_deliveries
    return bounds


def set_bounds(c: sqlite3.Connection, name: str, path: str, bounds: dict[str, int | None]) -> None:
    """Store ``bounds`` (columns named by ``bound_columns``, never by a caller)
    for the queue; ``QueueNotFound`` if it does not exist."""
    if bounds:
        columns = ", ".join(f"{column} = ?" for column in bounds)
        found = c.execute(
            f"UPDATE chute_queue SET {columns} WHERE name = ?", (*bounds.values(), name)
        ).rowcount
    else:
        found = c.execute("SELECT 1 FROM chute_queue WHERE name = ?", (name,)).fetchone()
    if not found:
        names = [n for (n,) in c.execute("SELECT name FROM chute_queue ORDER BY name")]
        raise QueueNotFound(no_queue(name, path, names))


def no_queue(name: str, path: str, names: list[str]) -> str:
    there = f"queues here: {', '.join(names)}" if names else "no queues here"
    return f"no queue {name!r} in {path}; {there}"


def take_dead(
    c: sqlite3.Connection, name: str, ids: list[int] | None, columns: str
) -> list[tuple[Any, ...]]:
    """Delete the queue's dead letters (``ids``: those of them still there)
    and answer their ``columns`` (the id first), in id order."""
    sql = f"DELETE FROM chute_dead WHERE queue = ? {{}}RETURNING {columns}"
    if ids is None:
        rows = c.execute(sql.format(""), (name,)).fetchall()
    else:
        rows = []
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            rows += c.execute(sql.format(f"AND id IN ({marks(chunk)}) "), (name, *chunk))
    rows.sort(key=lambda row: row[0])
    return rows


def count_settled(c: sqlite3.Connection, name: str) -> None:
    """An item leaves for good: one fewer stored, one fewer unfinished."""
    if not c.execute(
        "UPDATE chute_queue SET unfinished = unfinished - 1, stored = stored - 1 "
        "WHERE name = ? AND unfinished > 0",
        (name,),
    ).rowcount:
        raise ValueError(
            "task_done() was already called for every item: this job cannot be settled"
        )


def to_dead(
    c: sqlite3.Connection,
    name: str,
    id_: int,
    now: float,
    reason: str,
    error: str | None = None,
    *,
    counted: bool = False,
) -> None:
    """Move a stored item to the dead letters, with why: ``error`` (JSON of
    an ``ErrorInfo``) if given, else the last one it failed with."""
    c.execute(
        "INSERT INTO chute_dead (queue, data, deliveries, died_at, reason, last_error) "
        "SELECT queue, data, deliveries, ?, ?, coalesce(?, last_error) FROM chute_item "
        "WHERE id = ?",
        (now, reason, error, id_),
    )
    c.execute("DELETE FROM chute_item WHERE id = ?", (id_,))
    if counted:  # stored and unfinished already taken down by the caller
        c.execute("UPDATE chute_queue SET dead = dead + 1 WHERE name = ?", (name,))
    else:
        c.execute(
            "UPDATE chute_queue SET dead = dead + 1, stored = stored - 1, "
            "unfinished = max(unfinished - 1, 0) WHERE name = ?",
            (name,),
        )
