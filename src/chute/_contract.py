"""The contract every chute transport keeps, written down as Protocols.

The in-process queue implements it first; later transports (processes,
SQLite, Redis) implement the same Protocols and pass the same test suite in
``tests/contract``.
"""

from __future__ import annotations

import enum
import json
import math
import threading
import traceback
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, Literal, Protocol, TypeVar

from ._exceptions import QueueShutDown

__all__ = [
    "UNSET",
    "AsyncQueue",
    "DeadLetter",
    "DurableQueue",
    "Job",
    "Outcome",
    "QueueStatistics",
    "SyncQueue",
    "Unset",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """A snapshot of a queue, taken under its lock (so it is self-consistent).

    ``total_got`` counts hand-outs: an item returned by a failed reservation
    and handed out again counts twice. ``unfinished_tasks`` is what ``join()``
    waits on.
    """

    size: int
    maxsize: int
    getters_waiting: int
    putters_waiting: int
    in_flight: int
    total_put: int
    total_got: int
    peak_size: int
    dead_lettered: int
    unfinished_tasks: int
    shutdown: bool
    #: Items given back with ``nack(delay=)`` and not claimable yet: a part
    #: of ``in_flight`` (as before their delay, they are not in ``size``).
    delayed: int = 0
    #: Items put with ``put(delay=)`` and not due yet: a part of ``size``
    #: (they count toward ``maxsize``), though no get takes them before then.
    scheduled: int = 0
    #: Seconds the oldest item a get could take now has waited since it was
    #: put (an item put with ``delay=``: since it came due; an item given
    #: back by ``nack()``: since it was first put), by the store's clock;
    #: None when no item is ready, or where the queue does not keep put
    #: times (the in-process queues).
    oldest_ready_age: float | None = None


class Unset(enum.Enum):
    """The type of :data:`UNSET`: an argument that was not passed."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: "Not passed": keep what the queue has stored. ``open(url, name)`` without
#: ``max_deliveries`` and ``configure()`` without an argument change nothing,
#: where ``None`` would mean "no limit".
UNSET: Final = Unset.UNSET

#: How a job ended: ``None`` while in flight; ``"acked"``; ``"retried"`` (given
#: back to be tried again); ``"dead"`` (moved to the dead letters).
Outcome = Literal["acked", "retried", "dead"]

#: Tracebacks kept with a dead letter are cut to their last this many characters.
TRACEBACK_LIMIT = 8000


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An exception as stored beside an item: plain text, readable anywhere."""

    type: str
    message: str
    traceback: str

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        t = type(exc)
        name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
        text = "".join(traceback.format_exception(exc))
        if len(text) > TRACEBACK_LIMIT:
            text = "...\n" + text[-TRACEBACK_LIMIT:]
        return cls(name, str(exc), text)

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ErrorInfo | None:
        if not d:
            return None
        return cls(str(d.get("type", "")), str(d.get("message", "")), str(d.get("traceback", "")))

    def to_json(self) -> str:
        """As the stores keep it."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, stored: str | None) -> ErrorInfo | None:
        return cls.from_dict(json.loads(stored)) if stored else None


@dataclass(frozen=True, slots=True)
class DeadLetter(Generic[T]):
    """An item that was given up on, and why: what ``dead_letters()`` lists.

    ``item`` is the decoded item, or its stored ``bytes`` where it could not
    be decoded. ``reason`` is ``"failed"`` (its last delivery raised or was
    nacked with no tries left), ``"lease expired"`` (its consumer vanished or
    overran the lease on its last try) or ``"undecodable"``. ``error_type``,
    ``error`` and ``traceback`` describe the last exception it failed with
    (``None`` where none was given: a bare ``nack()`` or an expired lease).
    ``died_at`` is a Unix timestamp. ``id`` is the letter's stable id in its
    store (a stored queue's, for ``requeue_dead(ids)`` and
    ``purge_dead(ids)``); None for the in-process queues.
    """

    item: T
    deliveries: int
    died_at: float
    reason: str
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as plain values (``item`` as given), for JSON."""
        return {
            "item": self.item,
            "deliveries": self.deliveries,
            "died_at": self.died_at,
            "reason": self.reason,
            "error_type": self.error_type,
            "error": self.error,
            "traceback": self.traceback,
            "id": self.id,
        }


class Job(Protocol[T_co]):
    """An item handed out by ``reserve()``: at-least-once delivery.

    Settle it once with :meth:`ack` (done) or :meth:`nack` (give it back);
    used as a context manager, a clean exit acks and an exception nacks.
    """

    @property
    def item(self) -> T_co: ...

    @property
    def deliveries(self) -> int: ...

    @property
    def settled(self) -> bool: ...

    @property
    def outcome(self) -> Outcome | None: ...

    def ack(self) -> None: ...

    def nack(self, delay: float | None = None, *, error: BaseException | None = None) -> None: ...

    async def aack(self) -> None: ...

    async def anack(
        self, delay: float | None = None, *, error: BaseException | None = None
    ) -> None: ...


class Reservation(Protocol[T_co]):
    """What ``reserve()`` returns: an async context manager, or awaitable."""

    async def __aenter__(self) -> Job[T_co]: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class AsyncQueue(Protocol[T]):
    """The async face that every transport offers."""

    # Settable, as on queue.Queue: a larger bound wakes waiting putters.
    maxsize: int

    @property
    def is_shutdown(self) -> bool: ...

    @property
    def unfinished_tasks(self) -> int: ...

    def configure(
        self,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
    ) -> None: ...

    def dead_letters(self) -> list[DeadLetter[T]]: ...

    def purge_dead(self) -> list[DeadLetter[T]]: ...

    def requeue_dead(self) -> int: ...

    def qsize(self) -> int: ...

    def empty(self) -> bool: ...

    def full(self) -> bool: ...

    async def put(self, item: T, timeout: float | None = None) -> None: ...

    def put_nowait(self, item: T) -> None: ...

    async def put_batch(self, items: Iterable[T], timeout: float | None = None) -> None: ...

    async def get(self, timeout: float | None = None) -> T: ...

    def get_nowait(self) -> T: ...

    async def get_batch(self, max_items: int, timeout: float | None = None) -> list[T]: ...

    def task_done(self) -> None: ...

    async def join(self) -> None: ...

    def shutdown(self, immediate: bool = False) -> list[T]: ...

    def reserve(self, timeout: float | None = None) -> Reservation[T]: ...

    def statistics(self) -> QueueStatistics: ...

    def __aiter__(self) -> AsyncIterator[T]: ...


class DurableQueue(AsyncQueue[T], Protocol[T]):
    """What a named queue in a store adds (``chute.open``): a name, and a
    connection or file to close."""

    @property
    def name(self) -> str: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...

    def reopen(self) -> None: ...


class SyncQueue(Protocol[T]):
    """The blocking face for plain threads: a drop-in for ``queue.Queue``."""

    maxsize: int

    @property
    def unfinished_tasks(self) -> int: ...

    def qsize(self) -> int: ...

    def empty(self) -> bool: ...

    def full(self) -> bool: ...

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None: ...

    def put_nowait(self, item: T) -> None: ...

    def get(self, block: bool = True, timeout: float | None = None) -> T: ...

    def get_nowait(self) -> T: ...

    def task_done(self) -> None: ...

    def join(self) -> None: ...

    def shutdown(self, immediate: bool = False) -> list[T]: ...

    def __iter__(self) -> Iterator[T]: ...


class JobBase(Generic[T]):
    """What every transport's job shares: the item, its delivery count, and
    whether it is settled. Subclasses add ack() and nack()."""

    __slots__ = ("_deliveries", "_item", "_outcome", "_settled")

    def __init__(self, item: T, deliveries: int) -> None:
        self._item = item
        self._deliveries = deliveries
        self._settled = False
        self._outcome: Outcome | None = None

    @property
    def item(self) -> T:
        return self._item

    @property
    def deliveries(self) -> int:
        """How many times this item has been handed out, this time included."""
        return self._deliveries

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def outcome(self) -> Outcome | None:
        """How it was settled: ``None`` while in flight, ``"acked"``,
        ``"retried"`` (given back to be tried again) or ``"dead"``."""
        return self._outcome

    def ack(self) -> None:
        raise NotImplementedError

    def nack(self, delay: float | None = None, *, error: BaseException | None = None) -> None:
        raise NotImplementedError

    #: ``ack()`` and ``nack()`` settle at once, with no I/O to wait for (an
    #: in-process queue's job): a caller on a loop may call them directly,
    #: and ``aack()`` is only ``ack()``. A stored queue's job says False.
    settles_at_once: ClassVar[bool] = True

    async def aack(self) -> None:
        """``ack()`` for code on an event loop. Here it settles at once (an
        in-process queue has no round trip to make); a stored queue's job
        awaits its round trip instead of blocking the loop."""
        self.ack()

    async def anack(
        self, delay: float | None = None, *, error: BaseException | None = None
    ) -> None:
        """``nack()`` for code on an event loop (see ``aack``)."""
        self.nack(delay, error=error)

    def settle_on_exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None = None
    ) -> None:
        """What leaving ``with reserve()`` does: ack on a clean exit, nack on
        an exception (cancellation included; the exception is kept as the
        item's last error), nothing if already settled."""
        if not self._settled:
            if exc_type is None:
                self.ack()
            else:
                self.nack(error=exc)

    def __repr__(self) -> str:
        state = "settled" if self._settled else "in flight"
        return f"<chute.Job item={self._item!r} deliveries={self._deliveries} {state}>"


class SyncFaceBase(Generic[T]):
    """What every transport's ``q.sync`` shares: sizes, ``task_done``,
    ``shutdown``, ``statistics`` and iteration, passed on to the queue.
    Each transport adds its blocking put, get and join."""

    __slots__ = ("_q",)

    def __init__(self, queue: Any) -> None:
        self._q = queue

    @property
    def maxsize(self) -> int:
        return self._q.maxsize  # type: ignore[no-any-return]

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        # As on queue.Queue: assigning grows or shrinks the live queue.
        self._q.maxsize = value

    @property
    def unfinished_tasks(self) -> int:
        return self._q.unfinished_tasks  # type: ignore[no-any-return]

    def qsize(self) -> int:
        return self._q.qsize()  # type: ignore[no-any-return]

    def empty(self) -> bool:
        return self._q.empty()  # type: ignore[no-any-return]

    def full(self) -> bool:
        return self._q.full()  # type: ignore[no-any-return]

    def task_done(self) -> None:
        self._q.task_done()

    def shutdown(self, immediate: bool = False) -> list[T]:
        return self._q.shutdown(immediate)  # type: ignore[no-any-return]

    def statistics(self) -> QueueStatistics:
        return self._q.statistics()  # type: ignore[no-any-return]

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        raise NotImplementedError

    def __iter__(self) -> Iterator[T]:
        """Yield items until the queue is shut down and drained."""
        get = self.get
        while True:
            try:
                yield get()
            except QueueShutDown:
                return


class ReservationBase(Generic[T]):
    """``async with queue.reserve() as job``: what every transport shares.
    Subclasses take the job in ``__aenter__`` (and ``__await__``)."""

    __slots__ = ("_job", "_queue", "_timeout")

    def __init__(self, queue: Any, timeout: float | None) -> None:
        self._queue = queue
        self._timeout = timeout
        self._job: JobBase[T] | None = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._job is not None:
            self._job.settle_on_exit(exc_type, exc)


class SyncReservationBase(Generic[T]):
    """``with queue.sync.reserve() as job``: what every transport shares.
    Subclasses take the job in ``__enter__``."""

    __slots__ = ("_block", "_job", "_queue", "_timeout")

    def __init__(self, queue: Any, block: bool, timeout: float | None) -> None:
        self._queue = queue
        self._block = block
        self._timeout = timeout
        self._job: JobBase[T] | None = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._job is not None:
            self._job.settle_on_exit(exc_type, exc)


def check_delay(delay: object) -> float:
    """Validate ``nack(delay=)``: a finite number of seconds >= 0."""
    checked = check_timeout(delay)
    if checked is None or checked > threading.TIMEOUT_MAX:
        raise ValueError(f"delay must be a finite number of seconds, not {delay!r}")
    return checked


#: The bounds of ``put(priority=)``: what every store keeps exactly (a 32-bit int).
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
#: The longest ``put(key=)``, in characters.
MAX_KEY_LENGTH = 1024


def check_put_options(
    delay: object, priority: object, key: object
) -> tuple[float | None, int, str | None]:
    """Validate ``put(delay=, priority=, key=)``: a delay of a finite number of
    seconds >= 0 (0 or None: none), an int priority, a non-empty str key."""
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(
                f"delay must be a number of seconds or None, not {type(delay).__name__}"
            )
        if not 0 <= delay <= threading.TIMEOUT_MAX:  # also catches NaN and infinity
            raise ValueError(f"delay must be a finite number of seconds >= 0, not {delay!r}")
        delay = float(delay) or None
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise ValueError(f"priority must be between {low} and {high}, not {priority}")
    if key is not None:
        if not isinstance(key, str):
            raise TypeError(f"key must be a str or None, not {type(key).__name__}")
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"key must be 1 to {MAX_KEY_LENGTH} characters long, not {len(key)}")
    return delay, priority, key


def check_timeout(timeout: object) -> float | None:
    """Validate a ``timeout=`` argument: a number >= 0; infinity means None (no limit)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    t = float(timeout)
    if not t >= 0:  # also catches NaN
        # The stdlib's wording first: code and tests match on it.
        raise ValueError(f"'timeout' must be a non-negative number (seconds), not {timeout!r}")
    return None if t == math.inf else t


def check_connect_timeout(connect_timeout: object) -> float:
    """A network transport's ``connect_timeout``: a positive number of seconds."""
    try:
        checked = check_timeout(connect_timeout)
    except (TypeError, ValueError):
        checked = None
    if checked is None or checked <= 0:
        raise ValueError(
            f"connect_timeout must be a positive number of seconds, not {connect_timeout!r}"
        )
    return checked


def check_maxsize(maxsize: object) -> int:
    """Validate a ``maxsize=`` argument: an int >= 0, where 0 means unbounded."""
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"maxsize must be an int (0 means unbounded), not {type(maxsize).__name__}")
    if maxsize < 0:
        raise ValueError(f"maxsize must be >= 0 (0 means unbounded), not {maxsize}")
    return maxsize


def check_max_deliveries(value: object) -> int | None:
    """Validate ``max_deliveries``: an int >= 1, or None for no limit. The
    same errors on every transport."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"max_deliveries must be an int >= 1 or None (no limit), not {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"max_deliveries must be >= 1 or None (no limit), not {value}")
    return value


def check_max_items(max_items: object) -> int:
    """Validate ``get_batch``'s ``max_items``: an int >= 1."""
    if isinstance(max_items, bool) or not isinstance(max_items, int):
        raise TypeError(f"max_items must be an int, not {type(max_items).__name__}")
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, not {max_items}")
    return max_items
