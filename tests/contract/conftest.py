"""The transport fixture of the contract suite.

Every transport plugs in here with one entry in ``TRANSPORTS``: an async
factory that makes an empty queue of the asked order and ``maxsize``, and
the class that declares the transport's ``capabilities``. Every test in
this folder then runs against it, on every loop kind, or, if it needs more
than the FIFO core, against the transports that declare what it needs.

``process-peer`` is a ProcessQueue whose producing side (puts and shutdown)
runs in another process (see ``_peer.py``): every item of every test crosses
a process boundary, and every wake-up is rung from the other process.
"""

from __future__ import annotations

import importlib
import itertools
import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import pytest

import chute
from chute._durable.backend import Capabilities

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


async def _postgres(kind: str = "fifo", maxsize: int = 0, **options: Any) -> Any:
    from tests.postgres_server import shared_server

    assert kind == "fifo", "the contract tests ask for other orders only where declared"
    url = os.environ.get("CHUTE_TEST_POSTGRES_URL") or shared_server().url
    return await chute.open(url, f"contract-{os.getpid()}-{next(_counter)}", maxsize, **options)


class Transport(NamedTuple):
    make: Factory
    #: Where the transport declares what it can do (a ``capabilities`` class
    #: attribute), as ``"module:Class"``, for each order ``make`` can make.
    declared_by: dict[str, str]


TRANSPORTS: dict[str, Transport] = {
    "memory": Transport(
        _memory,
        {"fifo": "chute:Queue", "lifo": "chute:LifoQueue", "priority": "chute:PriorityQueue"},
    ),
    "process": Transport(_process, {"fifo": "chute._process:ProcessQueue"}),
    # The same ProcessQueue with its producing side in another process.
    "process-peer": Transport(_process_peer, {"fifo": "chute._process:ProcessQueue"}),
    "sqlite": Transport(_sqlite, {"fifo": "chute._backends.sqlite:SqliteBackend"}),
    # A real server on loopback, started for the test run.
    "redis": Transport(_redis, {"fifo": "chute._backends.redis:RedisBackend"}),
    "postgres": Transport(_postgres, {"fifo": "chute._backends.postgres:PostgresBackend"}),
}


def capabilities(transport: str, kind: str = "fifo") -> Capabilities:
    """What ``transport`` declares for its queues of order ``kind``."""
    module, _, name = TRANSPORTS[transport].declared_by[kind].partition(":")
    declared = getattr(importlib.import_module(module), name).capabilities
    assert isinstance(declared, Capabilities), f"{module}.{name}.capabilities"
    return declared


def _declaring(field: str, kind: str = "fifo") -> set[str]:
    """The transports that make queues of order ``kind`` and declare ``field``."""
    return {
        name
        for name, transport in TRANSPORTS.items()
        if kind in transport.declared_by and getattr(capabilities(name, kind), field)
    }


# What each transport can do beyond the FIFO core of the contract, as it
# declares it; a test that needs more asks for a fixture that only yields
# those transports.
# LIFO and priority orders: the transports whose priority queue orders.
ORDERS = _declaring("priorities", kind="priority")
# put(delay=), put(priority=), put(key=).
DELAYED_PUTS = _declaring("delayed_puts")
PRIORITISED_PUTS = _declaring("prioritised_puts")
KEYED_PUTS = _declaring("keyed_puts")
# shutdown(immediate=True) removes the stored items and returns them. A
# durable queue never deletes stored items on shutdown: they stay stored.
IMMEDIATE_REMOVES = _declaring("immediate_shutdown_removes")

# What no capability says, or what is about the test harness.
RESERVE = set(TRANSPORTS)  # reserve(): every transport
DEAD_LETTERS = set(TRANSPORTS)  # max_deliveries and the dead letters: every transport
FAIR = {"memory"}  # waiters served in arrival order, promised items kept for them
# A store keeps the items: dead letters with ids (pages, requeue and purge by
# id), and put times (statistics().oldest_ready_age).
STORED = set(TRANSPORTS) - {"memory", "process", "process-peer"}
# A cancel lands before the cancelled call runs again. Not so when the call
# runs in another process: cancelling it there is a message, which the call
# may beat (process-peer covers the same paths in the tests that can be
# ordered across processes).
CANCEL_IN_STEP = set(TRANSPORTS) - {"process-peer"}


# How much slower a transport's round trip is than memory's, for the tests
# that race timeouts of a fraction of a millisecond against puts: a durable
# queue's every call is a transaction on another thread.
TIMESCALE = {"sqlite": 20.0, "redis": 20.0, "postgres": 20.0}


class QueueFactory:
    """``q = await make_queue(maxsize=2)``; queues made are closed after the test."""

    def __init__(self, name: str, factory: Factory) -> None:
        self.name = name
        self.timescale = TIMESCALE.get(name, 1.0)
        self._factory = factory
        self._made: list[Any] = []
        #: The put option a ``make_unkept_option_queue`` transport does not keep.
        self.option = ""

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
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(ORDERS))
def make_ordered_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that also offer LIFO and priority order."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(RESERVE))
def make_reserving_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that offer reserve() and dead letters."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(FAIR))
def make_fair_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that serve blocked callers in arrival order."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(CANCEL_IN_STEP))
def make_local_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports whose calls run in the test's process, so a cancel is in step."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(IMMEDIATE_REMOVES))
def make_volatile_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports whose immediate shutdown hands the stored items back."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(set(TRANSPORTS) - IMMEDIATE_REMOVES))
def make_durable_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports whose immediate shutdown keeps the stored items (for reopen())."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(DEAD_LETTERS))
def make_dead_letter_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that offer max_deliveries and dead letters."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(STORED))
def make_stored_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that keep their items in a store (SQLite, Redis, PostgreSQL)."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(DELAYED_PUTS))
def make_delaying_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that keep ``put(delay=)``."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(PRIORITISED_PUTS))
def make_prioritising_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that keep ``put(priority=)``."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(KEYED_PUTS))
def make_keyed_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that keep ``put(key=)``."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(
    params=sorted(
        (name, option)
        for option, able in (
            ("delay", DELAYED_PUTS),
            ("priority", PRIORITISED_PUTS),
            ("key", KEYED_PUTS),
        )
        for name in set(TRANSPORTS) - able
    )
)
def make_unkept_option_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """A transport, and (``.option``) a put option it does not declare."""
    name, option = request.param
    factory = QueueFactory(name, TRANSPORTS[name].make)
    factory.option = option
    return factory


@pytest.fixture(params=sorted(KEYED_PUTS - IMMEDIATE_REMOVES))
def make_keyed_stored_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that keep ``put(key=)`` in a store (a get there is a
    claim that a cancelled caller gives back)."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)


@pytest.fixture(params=sorted(KEYED_PUTS & DELAYED_PUTS))
def make_keyed_delaying_queue(request: pytest.FixtureRequest) -> QueueFactory:
    """Transports that keep both ``put(key=)`` and ``put(delay=)``."""
    return QueueFactory(request.param, TRANSPORTS[request.param].make)
