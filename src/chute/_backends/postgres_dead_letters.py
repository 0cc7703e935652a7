"""The PostgreSQL backend's dead-letter calls: a page of a queue's dead
letters, purging them, and requeueing them (all, or chosen by id).

:class:`PostgresDeadLetters` is a base of ``PostgresBackend``
(``postgres.py``), kept apart so that the backend's module holds the calls
that move items through the queue, and this one what an operator does with
the items that died. A page and a purge are plain statements on
``chute_dead``; a requeue is the schema's function ``chute_requeue_dead``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._durable.backend import DeadRecord, row_ids
from .._durable.waiting import EVERYONE
from .postgres_link import Fn, Sql

__all__ = ["PostgresDeadLetters"]

#: What a dead letter is read as (``DeadRecord.from_row`` takes them in this order).
_DEAD_COLUMNS = "id, data, deliveries, died_at, reason, last_error"


class PostgresDeadLetters:
    """``dead_letters``, ``purge_dead`` and ``requeue_dead`` of one queue."""

    #: The queue's id in ``chute_queue``, and chute's schema, quoted.
    _id: int
    _s: str

    if TYPE_CHECKING:
        # Declared for the type checker only: ``PostgresBackend`` defines it,
        # and comes first in the order of bases (a body here would never run).
        def _fn(self, name: str, *args: Any) -> Fn[Any]: ...

    def dead_letters(
        self, *, limit: int | None = None, offset: int = 0, newest_first: bool = False
    ) -> Sql[list[DeadRecord]]:
        dead = f"{self._s}.chute_dead"
        order = "DESC" if newest_first else "ASC"
        # The page's ids first, from the (queue, id) index alone: the rows
        # an offset skips are never read from the table.
        sql = (
            f"SELECT {_DEAD_COLUMNS} FROM {dead} WHERE id IN ("
            f"SELECT id FROM {dead} WHERE queue = $1 ORDER BY id {order} LIMIT $2 OFFSET $3) "
            f"ORDER BY id {order}"
        )
        args = (self._id, limit, offset)

        async def listing(conn: Any) -> list[DeadRecord]:
            return [DeadRecord.from_row(*row) for row in await conn.fetch(sql, *args)]

        return Sql(listing)

    def purge_dead(self, ids: list[str] | None = None) -> Sql[list[DeadRecord]]:
        dead = f"{self._s}.chute_dead"
        chosen = "" if ids is None else " AND id = ANY($2::bigint[])"
        sql = (
            f"WITH d AS (DELETE FROM {dead} WHERE queue = $1{chosen} RETURNING {_DEAD_COLUMNS}) "
            "SELECT * FROM d ORDER BY id"
        )
        args = (self._id,) if ids is None else (self._id, row_ids(ids))

        async def purging(conn: Any) -> list[DeadRecord]:
            return [DeadRecord.from_row(*row) for row in await conn.fetch(sql, *args)]

        return Sql(purging)

    def requeue_dead(self, ids: list[str] | None = None) -> Sql[int]:
        return Sql(self._fn("requeue_dead", None if ids is None else row_ids(ids)), EVERYONE)
