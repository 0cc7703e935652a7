"""The seam between the durable core and a store: the Backend Protocol.

A backend holds only what its engine does differently: how to store
records atomically within a bound, claim them with a lease and a fencing
token, give them back, settle them, bury them, count them, and how to wait.
Everything users see (argument checks, codecs, the async and blocking
faces, deadlines, cancellation, decode-and-bury, statistics, join, dead
letters) is written once above it, in :mod:`chute._durable.queue` (the
dead-letter calls in :mod:`chute._durable.dead_letters`).

**Calls, not coroutines.** Each primitive *describes* one change or one
look and returns a :class:`Call`, an object only its backend understands
(a function for SQLite's thread, a script and its arguments for Redis).
The core runs it with ``await backend.run(call)`` from a task, or with
``backend.run_sync(call)`` from a plain thread, so one description serves
both faces, and the logic above is written once (see ``queue.py``).
Building a call does no I/O and never blocks.

**Cancellation.** ``run`` and ``run_sync`` keep one promise for every
primitive: when the caller is cancelled (a task's ``CancelledError``, a
thread's ``KeyboardInterrupt``) the call either never took effect, or it
took effect and then ``undo(result)``, if given, is run to its end before
the cancellation goes on, so that the caller's next call cannot overtake
the undoing (an ``undo`` answering None has nothing to undo: a put that
found the queue full). The core passes ``undo`` for the two changes a cancelled get
or put must not leave behind: ``store`` (undone by ``take_back``) and
``claim`` (undone by ``give_back``). ``settle`` is awaited shielded by the
core: a settle that was sent is seen through. A backend whose ``run``
commits to a call in its first step (sends it, or hands it to a task of
its own) and sees it through whatever becomes of the caller says so
(``sees_calls_through``), and the core then awaits it as it is: a shield
is a task of its own, and its passes of the loop.

**Waiting.** A backend owns a :class:`~chute._durable.waiting.Hub` per queue
per process, where this process's tasks and threads wait in line, and rings
it after each change it makes (see "what rings whom" below), and, where it
watches the store (SQLite's ``PRAGMA data_version``), after changes made
elsewhere. A backend that cannot watch says how often the core should look
again (``poll_interval``). A backend that can wait on the store itself
(``capabilities.blocking_wait``, Redis's ``XREADGROUP BLOCK``) does so inside
``claim(..., wait=seconds)``; the core then passes the time it may wait,
after a look (``wait=0``) that found nothing, or at once while
``looked_lately()`` says such a look was made a moment ago.

What rings whom (the hub's ``ring``), once the change is visible:

========================  =================================================
store n records            GET n
take_back n / claim n      PUT n, JOIN all
give_back n, requeue n     GET n
settle: ack                PUT 1, JOIN all
settle: nack               GET 1, JOIN all (with a delay: everyone, so that
                           sleeping getters learn when to look again)
task_done, bury            JOIN all
configure                  PUT all
shutdown, reopen           everyone
========================  =================================================

**Opening.** A backend is made by its class: ``Backend(where, name, *,
maxsize, max_deliveries, create, **options)``, blocking (``chute.open``
calls it off the event loop). ``maxsize`` and ``max_deliveries`` are
stored with the queue: ``UNSET`` keeps what is stored (a new queue:
unbounded, no limit), a value replaces it for every client. With
``create=False`` only a queue that exists is opened, else
``QueueNotFound`` and nothing created. ``Backend.queue_names(where,
**options)`` lists the stored queues, creating nothing.

**Errors.** A backend raises chute's errors, never its client's:
``QueueShutDown`` (bare: the core adds the items), ``QueueNotFound`` (the
queue vanished), ``ValueError`` (what can never succeed), ``ChuteError``
(the store failed, with why: a full disk, a lost connection), or
:class:`Unreachable` (a ``ChuteError``: the store could not be reached, so
the call surely did nothing): a getter already waiting keeps waiting
through it, and looks again at its next poll.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, NamedTuple, Protocol, TypeVar

from .._contract import ErrorInfo, Outcome, Unset
from .._exceptions import ChuteError

if TYPE_CHECKING:
    from .waiting import Hub

__all__ = [
    "DUPLICATE",
    "PLAIN",
    "Backend",
    "Call",
    "Capabilities",
    "Claimed",
    "Counts",
    "DeadRecord",
    "PutOptions",
    "QueueState",
    "Record",
    "Settle",
    "Stored",
    "Unreachable",
    "row_ids",
]

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can do, declared by it (``cls.capabilities``) and
    read by the contract suite instead of lists kept in the tests."""

    #: A get waits on the store itself (``claim(wait=)`` blocks there), not
    #: by the core sleeping between looks.
    blocking_wait: bool = False
    #: Items put by different clients are handed out in the order they
    #: arrived (one store serialises them), not only per client.
    arrival_order_across_clients: bool = True
    #: ``shutdown(immediate=True)`` removes the waiting items (and returns
    #: them) instead of keeping them stored.
    immediate_shutdown_removes: bool = False
    #: ``PriorityQueue``-like order.
    priorities: bool = False
    #: ``nack(delay=)`` keeps an item back for that long.
    delays: bool = True
    #: ``put(delay=)``: stored at once, claimable from then on.
    delayed_puts: bool = False
    #: ``put(priority=)``: lower numbers claimed first, exactly.
    prioritised_puts: bool = False
    #: ``put(key=)``: a second put of a key still in the queue stores nothing.
    keyed_puts: bool = False
    #: ``PutOptions.mark``: schedules whose slots are put once (``chute.every``).
    schedules: bool = False


class PutOptions(NamedTuple):
    """How a put stores its records: ``delay`` seconds before any claim
    takes them (None: none), ``priority`` (lower first; equal ones in
    arrival order), ``key`` (None, or: at most one record with it in the
    queue, ready, scheduled or in flight)."""

    delay: float | None = None
    priority: int = 0
    key: str | None = None
    #: (schedule, slot in ms): store only if the schedule's stored mark is
    #: below the slot, and move the mark to it, in the same atomic step
    #: (else ``DUPLICATE``): each slot of a schedule is put once, by
    #: whichever of its schedulers comes first.
    mark: tuple[str, int] | None = None


PLAIN: Final = PutOptions()


class Stored(enum.Enum):
    """What a store answers, besides a receipt or ``None`` (no room)."""

    #: Its key is in the queue already, or its schedule's slot was put
    #: already: nothing stored.
    DUPLICATE = "duplicate"


DUPLICATE: Final = Stored.DUPLICATE


class Unreachable(ChuteError):
    """The store could not be reached (no connection): the call did nothing."""


class QueueState(enum.IntEnum):
    """A stored queue's state (the numbers are what the stores keep)."""

    OPEN = 0
    SHUTDOWN = 1  # puts refused; gets go on until drained
    IMMEDIATE = 2  # gets refused too; join() returns


class Settle(enum.Enum):
    """How ``settle`` ends a delivery."""

    ACK = "ack"  # done: deleted, and counted as task_done()
    NACK = "nack"  # given back (after a delay), or buried when out of tries


class Record(NamedTuple):
    """One item as a claim found it."""

    #: The backend's own key for it (a row id, a stream entry id).
    key: Any
    data: bytes
    #: Times handed out, this one included.
    deliveries: int
    #: The fencing token of this delivery: a settle or extend carrying an
    #: older one (a consumer whose lease ran out) is refused.
    token: int
    #: What else the backend keeps of it (a priority, a key), to store it
    #: again as it was if a plain get is undone.
    extra: Any = None


class Claimed(NamedTuple):
    """What ``claim`` answers."""

    records: list[Record]
    #: Nothing found: when (wall clock, ``time.time()``) the next lease or
    #: delay runs out, so that a waiting getter looks again then; None if
    #: nothing is out.
    due: float | None = None
    #: The backend's ``seq`` as of this look (see ``Backend.seq``), or None
    #: if it cannot tell: then the core looks once more after getting in line.
    seq: int | None = None


class Counts(NamedTuple):
    """A snapshot of a stored queue, self-consistent (one transaction,
    one script)."""

    maxsize: int
    max_deliveries: int | None
    state: QueueState
    #: Claimable now: stored, not on a lease, not delayed.
    ready: int
    #: On a lease, or given back with a delay and not due yet.
    in_flight: int
    #: The delayed part of ``in_flight``.
    delayed: int
    total_put: int
    total_got: int
    peak: int
    dead: int
    #: Put and not yet done (what ``join()`` waits on).
    unfinished: int
    #: The part of ``ready`` put with a delay and not due yet.
    scheduled: int = 0
    #: Asked for (``counts(oldest=True)``): seconds, by the store's clock,
    #: since the oldest item claimable now became ready (put, or came due);
    #: None if none is, or if not asked. Computed by the store, so that a
    #: client's clock running apart from the server's does not skew it.
    oldest_ready_age: float | None = None


class DeadRecord(NamedTuple):
    """A dead letter as stored: the core decodes it into a ``DeadLetter``."""

    data: bytes
    deliveries: int
    died_at: float  # Unix time
    reason: str  # "failed", "lease expired", "undecodable"
    error: ErrorInfo | None
    #: Its id in the store (a row id, a stream entry id), as text.
    id: str | None = None

    @classmethod
    def from_row(
        cls,
        id_: int,
        data: bytes,
        deliveries: int,
        died_at: float,
        reason: str,
        error: str | None,
    ) -> DeadRecord:
        """As a SQL store keeps it: the error as JSON (``ErrorInfo.to_json``)."""
        return cls(data, deliveries, died_at, reason, ErrorInfo.from_json(error), str(id_))


class Call(Generic[R_co]):
    """A primitive's description, answering ``R_co`` when run: opaque to the
    core. A backend's calls subclass it (SQLite's: a function of the
    connection; Redis's: a script and its arguments)."""

    __slots__ = ()


class Backend(Protocol):
    """One named queue in one store, as seen from one process.

    Thread-safety: every method may be called from any thread; ``run`` from
    any event loop. None of the primitives below blocks: they only build a
    :class:`Call`. Only ``run_sync``, ``close`` (and the constructor and
    ``queue_names``) block the calling thread.
    """

    capabilities: ClassVar[Capabilities]

    #: The queue's name; ``where``: the store, for messages and the repr.
    name: str
    where: str
    #: Where this process's waiters for this queue wait; rung by the backend.
    hub: Hub
    #: Seconds between the core's looks while it waits for a change made
    #: elsewhere, or None where the backend rings the hub for those itself.
    poll_interval: float | None
    #: The same for a waiting getter, where a backend rings getters for
    #: changes made elsewhere but not putters or joiners (PostgreSQL's
    #: ``LISTEN``): its getters look again only this often, for leases of
    #: other clients that ran out.
    idle_poll_interval: float | None
    #: ``run`` sends a call before it first waits (unless it must connect
    #: first), or hands it to a task of its own, and sees it through
    #: whatever becomes of the caller: the core need not shield a settle.
    sees_calls_through: bool

    @property
    def seq(self) -> int:
        """Bumped by every change the backend has seen committed (its own,
        and others' where it watches): a claim that found nothing at ``seq``
        N, by a getter that got in line while it is still N, missed nothing."""
        ...

    def looked_lately(self) -> bool:
        """For a backend with ``blocking_wait``: a look made a moment ago
        (within its poll interval) found nothing claimable but what a wait
        on the store sees (new items), and nothing since in this process
        gave one back. A blocking get then waits on the store at once,
        without a look first. Other backends answer False."""
        ...

    def subscribe(self) -> Call[None] | None:
        """What to make before the look that a waiter sleeps on when it
        finds nothing, so that changes made elsewhere from then on ring this
        process's hub; None if nothing is needed (already made, or the
        backend rings or polls anyway). Changes committed before it returned
        are seen by the look after it."""
        ...

    # -- records -----------------------------------------------------------

    def store(self, records: list[bytes], options: PutOptions = PLAIN) -> Call[Any]:
        """Store all ``records`` at the end of the queue or none: within the
        stored ``maxsize`` (checked in the same atomic step; scheduled
        records count), answering ``None`` if they do not fit now,
        ``DUPLICATE`` if ``options.key`` is in the queue already (nothing
        stored), else a receipt for ``take_back``. With ``options.delay``,
        no claim takes them before then; ``options.priority``: lower first.
        ``QueueShutDown`` if shut down; ``ValueError`` (see
        ``never_fits``) if they can never fit."""
        ...

    def take_back(self, receipt: Any) -> Call[None]:
        """Undo a store whose caller was cancelled: remove its records if
        none of them was claimed yet (all or none), else leave them (the
        put stands, completed)."""
        ...

    def claim(self, n: int, *, lease: float | None, wait: float = 0.0) -> Call[Claimed]:
        """Claim up to ``n`` claimable records, oldest first: ready ones, and
        those whose lease or delay ran out (a record whose lease ran out on
        its last allowed delivery goes to the dead letters, reason "lease
        expired", instead). With ``lease`` (seconds), each is leased and its
        token and deliveries bumped; with None, they are taken for good
        (a plain get: no longer stored, still unfinished).

        Nothing claimable: ``QueueShutDown`` if the queue is shut down
        (immediately: even with records left), else ``Claimed([], due,
        seq)``. ``wait`` > 0 is passed only to a backend with
        ``capabilities.blocking_wait``: it may wait that long on the store
        for records to arrive; its cancellation must cut that wait short.
        """
        ...

    def give_back(self, records: list[Record], *, leased: bool) -> Call[None]:
        """Put claimed records back where they were (same order, claimable
        at once), as if never claimed: the deliveries and ``total_got`` they
        added are taken off. For a cancelled get, or the good records of a
        batch that held an undecodable one."""
        ...

    def bury(self, records: list[tuple[Record, ErrorInfo]], *, leased: bool) -> Call[None]:
        """Move claimed records that cannot be decoded to the dead letters
        (reason "undecodable", with the decode error), done for
        ``join()``."""
        ...

    def settle(
        self, record: Record, how: Settle, *, delay: float | None, error: ErrorInfo | None
    ) -> Call[Outcome]:
        """End a leased delivery, if ``record.token`` still holds the lease
        (else ``ChuteError``: "lease ran out ... delivered again"). ACK:
        delete it, counted as done. NACK: give it back (claimable after
        ``delay`` seconds: in flight and delayed until then), keeping
        ``error`` as its last error; to the dead letters instead (reason
        "failed") when it used its last delivery or the queue was shut down
        immediately. Answers how it ended: "acked", "retried", "dead".
        ``ValueError`` if every task was already marked done."""
        ...

    def extend(self, record: Record, seconds: float) -> Call[None]:
        """Keep the lease ``seconds`` from now, if ``record.token`` still
        holds it (else ``ChuteError``). A backend with a cap on one
        extension raises ``ValueError`` naming it."""
        ...

    def task_done(self) -> Call[None]:
        """One unfinished item done; ``ValueError`` if none is unfinished."""
        ...

    # -- the queue ---------------------------------------------------------

    def counts(self, *, oldest: bool = False) -> Call[Counts]:
        """A snapshot; read-only. With ``oldest``, its ``oldest_ready_age``
        too (a few more index seeks: asked by ``statistics()`` only)."""
        ...

    def configure(self, *, maxsize: int | Unset, max_deliveries: int | Unset | None) -> Call[None]:
        """Store the bounds passed (checked by the core); ``UNSET`` keeps one."""
        ...

    def shutdown(self, *, immediate: bool) -> Call[None]:
        """Record the shutdown (never lowering IMMEDIATE to SHUTDOWN). Stored
        records are kept unless ``capabilities.immediate_shutdown_removes``."""
        ...

    def reopen(self) -> Call[None]:
        """Record the queue as open again."""
        ...

    def dead_letters(
        self, *, limit: int | None = None, offset: int = 0, newest_first: bool = False
    ) -> Call[list[DeadRecord]]:
        """A page of the dead letters (each with its ``id``): oldest first
        (or newest first), ``offset`` skipped (in the store: the skipped
        ones are not sent), at most ``limit`` (None: all). Read-only."""
        ...

    def purge_dead(self, ids: list[str] | None = None) -> Call[list[DeadRecord]]:
        """Remove the dead letters (with ``ids``: those of them still there,
        in one atomic step) and answer them, oldest first. ``ValueError``,
        when building the call, for an id this store could not have made."""
        ...

    def requeue_dead(self, ids: list[str] | None = None) -> Call[int]:
        """The dead letters (with ``ids``: those of them still there) back at
        the end of the queue in the order they died (deliveries from zero,
        unfinished again), in one atomic step; how many. ``QueueShutDown``
        if shut down (nothing moved); ``ValueError`` as for ``purge_dead``."""
        ...

    # -- running calls, and the end ----------------------------------------

    async def run(self, call: Call[R], *, undo: Callable[[R], Call[Any] | None] | None = None) -> R:
        """Run ``call`` for a task on an event loop (never blocking that
        loop); see the module docstring for cancellation."""
        ...

    def run_sync(self, call: Call[R], *, undo: Callable[[R], Call[Any] | None] | None = None) -> R:
        """Run ``call`` for a plain thread, blocking it; an interruption
        (``KeyboardInterrupt``) keeps the same promise as a cancellation."""
        ...

    def close(self) -> None:
        """Let go of the store (idempotent; stored records stay). This
        queue's waiters are rung, and find it closed."""
        ...

    async def aclose(self) -> None:
        """``close`` without blocking the loop."""
        ...


#: A row id as a SQL store writes it: what ``str()`` of a positive int gives.
_ROW_ID = re.compile(r"[1-9][0-9]{0,18}")


def row_ids(ids: list[str]) -> list[int]:
    """Dead letter ids of a SQL store (row ids, as text) as ints, or
    ``ValueError`` naming the first that such a store could not have made."""
    out = []
    for id_ in ids:
        if not _ROW_ID.fullmatch(id_) or int(id_) >= 2**63:
            raise ValueError(f"{id_!r} is not a dead letter id of this queue (a row id)")
        out.append(int(id_))
    return out


def never_fits(n: int, maxsize: int) -> ValueError:
    """The error for a batch larger than the queue's bound: the same words
    on every transport."""
    return ValueError(f"a batch of {n} items can never fit a queue of maxsize {maxsize}")
