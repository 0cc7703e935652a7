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


async def _process(kind: str = "fifo", maxsize: int = 0, **options: Any) -> Any:
    from chute._process import ProcessQueue

    assert kind == "fifo", "the contract tests ask for other orders only where declared"
    return ProcessQueue(maxsize, **options)


TRANSPORTS: dict[str, Factory] = {"memory": _memory, "process": _process}

# What each transport declares it can do beyond the FIFO core of the contract;
# a test that needs more asks for a fixture that only yields those transports.
ORDERS = {"memory"}  # LIFO and priority orders
RESERVE = {"memory", "process"}  # reserve()
DEAD_LETTERS = {"memory", "process"}  # max_deliveries and the dead letters
FAIR = {"memory"}  # waiters served in arrival order, promised items kept for them


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


@pytest.fixture(params=sorted(ORDERS))
def make_ordered_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that also offer LIFO and priority order."""
    return QueueFactory(request.param, TRANSPORTS[request.param])


@pytest.fixture(params=sorted(RESERVE))
def make_reserving_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that offer reserve() and dead letters."""
    return QueueFactory(request.param, TRANSPORTS[request.param])


@pytest.fixture(params=sorted(FAIR))
def make_fair_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that serve blocked callers in arrival order."""
    return QueueFactory(request.param, TRANSPORTS[request.param])


@pytest.fixture(params=sorted(DEAD_LETTERS))
def make_dead_letter_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that offer max_deliveries and dead letters."""
    return QueueFactory(request.param, TRANSPORTS[request.param])
