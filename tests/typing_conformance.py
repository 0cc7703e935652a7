"""Checked by mypy (pyproject's [tool.mypy] files), never run: every
transport conforms to the contract's Protocols, so a queue of any transport
can be passed where code expects ``chute.AsyncQueue`` or ``chute.SyncQueue``."""

from __future__ import annotations

import chute
from chute._backends.postgres import PostgresQueue
from chute._backends.redis import RedisQueue
from chute._backends.sqlite import SqliteQueue


def every_transport_conforms(
    memory: chute.Queue[int],
    lifo: chute.LifoQueue[int],
    priority: chute.PriorityQueue[int],
    process: chute.ProcessQueue[int],
    sqlite: SqliteQueue[int],
    redis: RedisQueue[int],
    postgres: PostgresQueue[int],
) -> None:
    queues: list[chute.AsyncQueue[int]] = [
        memory, lifo, priority, process, sqlite, redis, postgres,
    ]  # fmt: skip
    faces: list[chute.SyncQueue[int]] = [q.sync for q in (memory, lifo, priority, process)]
    faces += [sqlite.sync, redis.sync, postgres.sync]
    stored: list[chute.DurableQueue[int]] = [sqlite, redis, postgres]
    jobs: list[chute.Job[int]] = []
    del queues, faces, stored, jobs
