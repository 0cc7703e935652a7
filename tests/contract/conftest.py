"""The transport fixture of the contract suite.

Every transport plugs in here with one entry in ``TRANSPORTS``: an async
factory that makes an empty queue of the asked order and ``maxsize``. Every
test in this folder then runs against it, on every loop kind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import chute

Factory = Callable[..., Awaitable[Any]]


async def _memory(kind: str = "fifo", maxsize: int = 0, **options: Any) -> Any:
    cls = {"fifo": chute.Queue, "lifo": chute.LifoQueue, "priority": chute.PriorityQueue}[kind]
    return cls(maxsize, **options)


TRANSPORTS: dict[str, Factory] = {"memory": _memory}


class QueueFactory:
    """``q = await make_queue(maxsize=2)``; queues made are closed after the test."""

    def __init__(self, name: str, factory: Factory) -> None:
        self.name = name
        self._factory = factory
        self._made: list[Any] = []

    async def __call__(self, kind: str = "fifo", maxsize: int = 0, **options: Any) -> Any:
        q = await self._factory(kind=kind, maxsize=maxsize, **options)
        self._made.append(q)
        return q

    async def aclose(self) -> None:
        for q in self._made:
            close = getattr(q, "aclose", None)
            if close is not None:
                await close()


@pytest.fixture(params=sorted(TRANSPORTS))
def make_queue(request: pytest.FixtureRequest) -> QueueFactory:
    return QueueFactory(request.param, TRANSPORTS[request.param])
