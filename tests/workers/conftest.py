"""The workers' tests: ``make``, a new queue of each transport."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest

import chute

_names = itertools.count()  # queue names on the shared servers: never reused


class QueueMaker:
    """``await make(**options)``: a new queue of one transport; the test's
    runner closes them all afterwards (``aclose``)."""

    def __init__(self, transport: str, folder: Any) -> None:
        self.transport = transport
        self.folder = folder
        self.made: list[Any] = []

    async def __call__(self, **options: Any) -> Any:
        n = len(self.made)
        if self.transport == "memory":
            q = chute.Queue(**options)
        elif self.transport == "sqlite":
            q = await chute.open(f"sqlite:///{self.folder}/w{n}.db", "w", **options)
        else:
            # A shared server: one name per queue, never reused in this run.
            name = f"w-{os.getpid()}-{next(_names)}"
            q = await chute.open(self.server_url(), name, **options)
        self.made.append(q)
        return q

    def address(self, q: Any) -> tuple[str, str]:
        """The URL and name that open the stored queue ``q`` again: as
        another client (on PostgreSQL, another spelling of the URL, so that
        it gets a store of its own, as another process would)."""
        if self.transport == "sqlite":
            return f"sqlite:///{self.folder}/w{self.made.index(q)}.db", q.name
        url = self.server_url()
        if self.transport == "postgres":
            url = "postgres://" + url.removeprefix("postgresql://")
        return url, q.name

    def server_url(self) -> str:
        if self.transport == "redis":
            from tests.redis_server import shared_server as redis_server

            return redis_server().url
        from tests.postgres_server import shared_server as postgres_server

        return postgres_server().url

    async def aclose(self) -> None:
        for q in self.made:
            aclose = getattr(q, "aclose", None)
            if aclose is not None:
                await aclose()


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def make(request: Any, tmp_path: Any) -> QueueMaker:
    return QueueMaker(request.param, tmp_path)


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def make_stored(request: Any, tmp_path: Any) -> QueueMaker:
    """``make`` for the queues that hand out leases (stored ones)."""
    return QueueMaker(request.param, tmp_path)
