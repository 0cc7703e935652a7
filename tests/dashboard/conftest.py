"""Stores for the dashboard's tests, each holding only the test's own
queues (a dashboard shows every queue at its URL): a new SQLite file, a
Redis server of its own, or a new database on the run's PostgreSQL."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest

_names = itertools.count()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def store(request: Any, tmp_path: Any) -> Iterator[tuple[str, str]]:
    """(URL, a queue name)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/q.db", "emails"
    elif request.param == "redis":
        from tests.redis_server import RedisServer

        server = RedisServer().start()
        try:
            yield server.url, "emails"
        finally:
            server.remove()
    else:
        from tests.postgres_server import shared_server

        pg = shared_server()
        database = f"board_{os.getpid()}_{next(_names)}"
        pg.create_database(database)
        yield pg.url.rsplit("/", 1)[0] + f"/{database}", "emails"
