"""The transport fixture of the contract suite.

Every transport plugs in here with one entry in ``TRANSPORTS``: an async
factory that makes an empty queue of the asked order and ``maxsize``. Every
test in this folder then runs against it, on every loop kind.

``process-peer`` is a ProcessQueue whose producing side (puts and shutdown)
runs in another process (see ``_peer.py``): every item of every test crosses
a process boundary, and every wake-up is rung from the other process.
"""

from __future__ import annotations

import itertools
import os
import tempfile
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


async def _process_peer(kind: str = "fifo", maxsize: int = 0, **options: Any) -> Any:
    from ._peer import PeerQueue

    return PeerQueue(await _process(kind, maxsize, **options))


_files = tempfile.TemporaryDirectory(prefix="chute-contract-")
_counter = itertools.count()


async def _sqlite(kind: str = "fifo", maxsize: int = 0, **options: Any) -> Any:
    assert kind == "fifo", "the contract tests ask for other orders only where declared"
    path = os.path.join(_files.name, f"q{next(_counter)}.db")
    return await chute.open(f"sqlite:///{path}", "contract", maxsize, **options)


async def _redis(kind: str = "fifo", maxsize: int = 0, **options: Any) -> Any:
    from tests.redis_server import shared_server

    assert kind == "fifo", "the contract tests ask for other orders only where declared"
    url = shared_server().url
    return await chute.open(url, f"contract-{os.getpid()}-{next(_counter)}", maxsize, **options)


TRANSPORTS: dict[str, Factory] = {
    "memory": _memory,
    "process": _process,
    # The same ProcessQueue with its producing side in another process.
    "process-peer": _process_peer,
    "sqlite": _sqlite,
    # A real server on loopback, started for the test run.
    "redis": _redis,
}

# What each transport declares it can do beyond the FIFO core of the contract;
# a test that needs more asks for a fixture that only yields those transports.
ORDERS = {"memory"}  # LIFO and priority orders
RESERVE = {"memory", "process", "process-peer", "sqlite", "redis"}  # reserve()
DEAD_LETTERS = {
    "memory",
    "process",
    "process-peer",
    "sqlite",
    "redis",
}  # max_deliveries and the dead letters
FAIR = {"memory"}  # waiters served in arrival order, promised items kept for them
# A cancel lands before the cancelled call runs again. Not so when the call
# runs in another process: cancelling it there is a message, which the call
# may beat (process-peer covers the same paths in the tests that can be
# ordered across processes).
CANCEL_IN_STEP = {"memory", "process", "sqlite", "redis"}
# shutdown(immediate=True) removes the stored items and returns them. A
# durable queue never deletes stored items on shutdown: they stay in the file.
IMMEDIATE_REMOVES = {"memory", "process", "process-peer"}


# How much slower a transport's round trip is than memory's, for the tests
# that race timeouts of a fraction of a millisecond against puts: a durable
# queue's every call is a transaction on another thread.
TIMESCALE = {"sqlite": 20.0, "redis": 20.0}


class QueueFactory:
    """``q = await make_queue(maxsize=2)``; queues made are closed after the test."""

    def __init__(self, name: str, factory: Factory) -> None:
        self.name = name
        self.timescale = TIMESCALE.get(name, 1.0)
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


@pytest.fixture(params=sorted(CANCEL_IN_STEP))
def make_local_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports whose calls run in the test's process, so a cancel is in step."""
    return QueueFactory(request.param, TRANSPORTS[request.param])


@pytest.fixture(params=sorted(IMMEDIATE_REMOVES))
def make_volatile_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports whose immediate shutdown hands the stored items back."""
    return QueueFactory(request.param, TRANSPORTS[request.param])


@pytest.fixture(params=sorted(set(TRANSPORTS) - IMMEDIATE_REMOVES))
def make_durable_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports whose immediate shutdown keeps the stored items (for reopen())."""
    return QueueFactory(request.param, TRANSPORTS[request.param])


@pytest.fixture(params=sorted(DEAD_LETTERS))
def make_dead_letter_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that offer max_deliveries and dead letters."""
    return QueueFactory(request.param, TRANSPORTS[request.param])
