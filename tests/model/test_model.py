"""A model of the contract, and every transport driven against it.

A hypothesis state machine makes random sequences of calls — puts and gets
(single, nowait, batches), reservations settled every way (ack, nack now,
nack with a delay too long to end during the run, an exception inside
``async with``), calls that must time out, ``task_done``/``join``,
``configure``, shutdowns and reopening, dead letters — on one real queue,
and after every step compares the queue with a plain model: a list in
delivery order and a few counters. Each call's result or error must be the
one the model predicts, and after each step ``qsize()``, ``empty()``,
``full()``, ``maxsize`` and ``statistics()`` must agree with it. Items are
unique numbers, so a lost or duplicated item shows as a wrong result.

Only the public API is used. Where transports are allowed to differ, the
model reads what the transport declares (``type(q).capabilities``, on every
transport) or the table ``CAPABILITIES`` below.

A run is reproducible (derandomized, no example database); a failure prints
the shortest sequence of calls that shows it. ``CHUTE_MODEL_EXAMPLES=500``
runs more examples, ``CHUTE_MODEL_RANDOM=1`` draws new sequences each run.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

import chute

R = TypeVar("R")

#: A delay the model can reason about: it never ends during a run.
LONG = 3600.0
#: A bound for a call that the model says returns at once: only a bug waits
#: this long (short, since shrinking a failure runs it hundreds of times).
PROMPT = 3.0
#: Calls per run: enough to fill, drain, fail and shut down a small queue.
STEPS = 40


@dataclass(frozen=True)
class Capabilities:
    """Where transports may differ, as the model needs to know it."""

    #: ``nack()`` puts the item at the front (memory, process); otherwise it
    #: goes back in its place by arrival (the durable queues' stored order).
    give_back_to_front: bool
    #: ``shutdown(immediate=True)`` removes (and returns) the stored items.
    immediate_shutdown_removes: bool
    #: ... and the delayed ones too (memory); otherwise they stay in flight.
    immediate_shutdown_removes_delayed: bool
    #: ``reopen()`` undoes a shutdown.
    reopen: bool
    #: ``requeue_dead()`` moves only as many as ``maxsize`` leaves room for.
    requeue_within_maxsize: bool
    #: A timeout for a call that the model says must time out (the queue is
    #: empty, or full, and nothing else runs): any value shows the same, and
    #: a short one keeps shrinking a failure quick.
    tiny_timeout: float
    #: How long ``join()`` must go on waiting to count as "not returning":
    #: longer than a thread hop or a round trip to the store.
    join_patience: float
    #: ``join()`` returns once the queue is shut down with ``immediate=True``
    #: and nothing is in hand, though ``unfinished_tasks`` still counts the
    #: items the durable queues keep.
    join_ends_at_immediate_shutdown: bool = False


CAPABILITIES = {
    "memory": Capabilities(
        give_back_to_front=True,
        immediate_shutdown_removes=True,
        immediate_shutdown_removes_delayed=True,
        reopen=False,
        requeue_within_maxsize=False,
        tiny_timeout=0.001,
        join_patience=0.005,
    ),
    "process": Capabilities(
        give_back_to_front=True,
        immediate_shutdown_removes=True,
        immediate_shutdown_removes_delayed=False,
        reopen=False,
        requeue_within_maxsize=True,
        tiny_timeout=0.001,
        join_patience=0.005,
    ),
    "sqlite": Capabilities(
        give_back_to_front=False,
        immediate_shutdown_removes=False,
        immediate_shutdown_removes_delayed=False,
        reopen=True,
        requeue_within_maxsize=False,
        tiny_timeout=0.01,
        join_patience=0.05,
        join_ends_at_immediate_shutdown=True,
    ),
    "redis": Capabilities(
        give_back_to_front=False,
        immediate_shutdown_removes=False,
        immediate_shutdown_removes_delayed=False,
        reopen=True,
        requeue_within_maxsize=False,
        tiny_timeout=0.01,
        join_patience=0.05,
        join_ends_at_immediate_shutdown=True,
    ),
    "postgres": Capabilities(
        give_back_to_front=False,
        immediate_shutdown_removes=False,
        immediate_shutdown_removes_delayed=False,
        reopen=True,
        requeue_within_maxsize=False,
        tiny_timeout=0.01,
        join_patience=0.1,
        join_ends_at_immediate_shutdown=True,
    ),
}


# Divergences the model found, each pinned by a test in test_found.py: the
# model steps around them until they are fixed (then remove them here).
EMPTY_BATCH_AFTER_SHUTDOWN = "put_batch([]) after shutdown() returns instead of raising"
EMPTY_BATCH_OVER_BOUND = "put_batch([]) waits while the queue holds more than maxsize"
KNOWN_BUGS = {
    "memory": set(),
    "process": set(),
    "sqlite": set(),
    "redis": set(),
    "postgres": set(),
}


def declared(kind: str, q: Any) -> Capabilities:
    """The table's entry, with what the transport declares itself
    (``type(q).capabilities``, on every transport)."""
    own = type(q).capabilities
    return replace(CAPABILITIES[kind], immediate_shutdown_removes=own.immediate_shutdown_removes)


def test_the_table_agrees_with_what_the_transports_declare() -> None:
    """A transport that starts declaring what the table says, or changes
    what it declares, shows here first."""

    async def declared_by_all() -> dict[str, bool]:
        found = {}
        for kind in CAPABILITIES:
            q = await _open(kind, 0, None)
            try:
                found[kind] = declared(kind, q).immediate_shutdown_removes
            finally:
                await _close(q)
        return found

    expected = {kind: caps.immediate_shutdown_removes for kind, caps in CAPABILITIES.items()}
    assert asyncio.run(declared_by_all()) == expected


# -- opening a queue of each transport ------------------------------------------

_files = tempfile.TemporaryDirectory(prefix="chute-model-")
_names = itertools.count()


async def _open(kind: str, maxsize: int, max_deliveries: int | None) -> Any:
    if kind == "memory":
        return chute.Queue(maxsize, max_deliveries=max_deliveries)
    if kind == "process":
        return chute.ProcessQueue(maxsize, max_deliveries=max_deliveries)
    if kind == "sqlite":
        path = os.path.join(_files.name, f"model{next(_names)}.db")
        return await chute.open(
            f"sqlite:///{path}", "model", maxsize, max_deliveries=max_deliveries
        )
    if kind == "redis":
        from tests.redis_server import shared_server

        name = f"model-{os.getpid()}-{next(_names)}"
        return await chute.open(shared_server().url, name, maxsize, max_deliveries=max_deliveries)
    if kind == "postgres":
        from tests.postgres_server import shared_server as shared_postgres

        name = f"model-{os.getpid()}-{next(_names)}"
        return await chute.open(shared_postgres().url, name, maxsize, max_deliveries=max_deliveries)
    raise AssertionError(kind)


async def _close(q: Any) -> None:
    aclose = getattr(q, "aclose", None)
    if aclose is not None:
        await aclose()
    elif hasattr(q, "close"):
        q.close()


# -- the model ------------------------------------------------------------------


@dataclass
class Entry:
    """An item as the model holds it."""

    item: int
    seq: int  # arrival order: where a durable queue gives it back
    deliveries: int = 0
    error: tuple[str, str] | None = None  # (type, message) of its last failure


@dataclass
class Held:
    """A reserved job and the model's entry for it."""

    job: Any
    entry: Entry

    def __repr__(self) -> str:
        return f"<job of item {self.entry.item}>"


@dataclass
class Model:
    maxsize: int
    max_deliveries: int | None
    ready: list[Entry] = field(default_factory=list)  # in the order gets take them
    held: int = 0  # reserved, not settled
    delayed: list[Entry] = field(default_factory=list)  # nacked with LONG
    dead: list[tuple[int, int, str, str | None, str | None]] = field(default_factory=list)
    unfinished: int = 0
    gotten_not_done: int = 0  # taken by a plain get, task_done() not yet called
    shutdown: str | None = None  # None, "plain" or "immediate"

    @property
    def full(self) -> bool:
        return self.maxsize > 0 and len(self.ready) >= self.maxsize

    def room(self) -> int | None:
        return None if self.maxsize == 0 else max(0, self.maxsize - len(self.ready))


ERRORS: dict[str, type[Exception]] = {"ValueError": ValueError, "RuntimeError": RuntimeError}


class ModelMachine(RuleBasedStateMachine):
    kind = "memory"  # set per transport by machine_for()

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.q: Any = None
        self.m = Model(0, None)
        self.caps = CAPABILITIES[self.kind]
        self.numbers = itertools.count(1)
        self.seqs = itertools.count(1)
        self.settled: list[Held] = []
        self.calm = 0
        self.steps = 0

    def run(self, coro: Awaitable[R]) -> R:
        """Run one call on the machine's loop, as a program's loop would:
        what the transport left running in the background (Redis deletes
        what a get took right after returning it) ends before the model
        looks, as it would while the program's loop goes on."""
        return self.runner.run(_then_idle(coro))

    def teardown(self) -> None:
        try:
            if self.q is not None:
                assert not getattr(self.q, "closed", False)
                self.run(_close(self.q))
                if hasattr(self.q, "close"):  # a memory queue has none: never closed
                    assert getattr(self.q, "closed", True)
        finally:
            self.runner.close()

    @initialize(
        maxsize=st.sampled_from([0, 1, 2, 3, 5]),
        max_deliveries=st.sampled_from([None, 1, 2, 3]),
        calm=st.integers(0, STEPS),
        prefill=st.integers(0, 5),
    )
    def open_queue(self, maxsize: int, max_deliveries: int | None, calm: int, prefill: int) -> None:
        # A shutdown ends most of what a queue without reopen() can do: it
        # waits for ``calm`` steps, so that most runs reach the states that
        # take many steps to build (shrinking lowers it to what a failure needs).
        self.calm = calm
        self.q = self.run(_open(self.kind, maxsize, max_deliveries))
        self.caps = declared(self.kind, self.q)
        self.m = Model(maxsize, max_deliveries)
        if maxsize:
            prefill = min(prefill, maxsize)
        # Items to start from: a step spent on a get or a reservation finds some.
        self.put_batch(prefill)

    # -- helpers ------------------------------------------------------------------

    def new_entry(self) -> Entry:
        return Entry(next(self.numbers), next(self.seqs))

    def store(self, entries: list[Entry]) -> None:
        self.m.ready.extend(entries)
        self.m.unfinished += len(entries)

    def give_back(self, entry: Entry) -> None:
        if self.caps.give_back_to_front:
            self.m.ready.insert(0, entry)
        else:
            keys = [e.seq for e in self.m.ready]
            self.m.ready.insert(bisect.bisect(keys, entry.seq), entry)

    def take(self, n: int) -> list[Entry]:
        taken, self.m.ready = self.m.ready[:n], self.m.ready[n:]
        return taken

    def known_bug(self, bug: str) -> bool:
        """Whether the model is at ``bug`` (one of KNOWN_BUGS) on this transport."""
        if bug not in KNOWN_BUGS[self.kind]:
            return False
        m = self.m
        if bug == EMPTY_BATCH_AFTER_SHUTDOWN:
            return m.shutdown is not None
        if bug == EMPTY_BATCH_OVER_BOUND:
            return m.shutdown is None and 0 < m.maxsize < len(m.ready)
        raise AssertionError(bug)

    def gets_raise_shutdown(self) -> bool:
        m = self.m
        return m.shutdown == "immediate" or (m.shutdown == "plain" and not m.ready)

    def expect_raises(self, exc: type[BaseException], call: Callable[[], Any]) -> BaseException:
        with pytest.raises(exc) as info:
            call()
        return info.value

    # -- puts -----------------------------------------------------------------------

    @rule(via=st.sampled_from(["put", "put_nowait", "put_batch"]), n=st.integers(0, 4))
    def put(self, via: str, n: int) -> None:
        """One item (``n`` only sizes a batch), or a batch of ``n``."""
        if via == "put_batch":
            self.put_batch(n)
            return
        m, e = self.m, self.new_entry()
        if m.shutdown:
            err = self.expect_raises(chute.QueueShutDown, lambda: self.put_one(via, e.item))
            assert err.item == e.item  # type: ignore[attr-defined]
        elif m.full and via == "put_nowait":
            self.expect_raises(chute.QueueFull, lambda: self.put_one(via, e.item))
        elif m.full:
            with pytest.raises(TimeoutError):
                self.run(self.q.put(e.item, timeout=self.caps.tiny_timeout))
        else:
            self.put_one(via, e.item)
            self.store([e])

    def put_one(self, via: str, item: int) -> None:
        if via == "put_nowait":
            self.q.put_nowait(item)
        else:
            self.run(self.q.put(item, timeout=PROMPT))

    def put_batch(self, n: int) -> None:
        m = self.m
        if n == 0 and self.known_bug(
            EMPTY_BATCH_AFTER_SHUTDOWN if m.shutdown else EMPTY_BATCH_OVER_BOUND
        ):
            return
        entries = [self.new_entry() for _ in range(n)]
        items = [e.item for e in entries]
        if m.maxsize and n > m.maxsize:
            # Bad input and a shut-down queue: either refusal is right.
            refused = (ValueError, chute.QueueShutDown) if m.shutdown else ValueError
            with pytest.raises(refused):
                self.run(self.q.put_batch(items, timeout=PROMPT))
        elif m.shutdown:
            err = self.expect_raises(
                chute.QueueShutDown, lambda: self.run(self.q.put_batch(items, timeout=PROMPT))
            )
            assert err.items == items  # type: ignore[attr-defined]
        elif (room := m.room()) is not None and room < n:
            with pytest.raises(TimeoutError):
                self.run(self.q.put_batch(items, timeout=self.caps.tiny_timeout))
        else:
            self.run(self.q.put_batch(items, timeout=PROMPT))
            self.store(entries)

    # -- gets -----------------------------------------------------------------------

    def took(self, entries: list[Entry]) -> list[int]:
        self.m.gotten_not_done += len(entries)
        return [e.item for e in entries]

    @rule(via=st.sampled_from(["get", "get_nowait", "get_batch"]), n=st.integers(1, 4))
    def get(self, via: str, n: int) -> None:
        """One item (``n`` only sizes a batch), or a batch of up to ``n``."""
        n = n if via == "get_batch" else 1
        if self.gets_raise_shutdown():
            self.expect_raises(chute.QueueShutDown, lambda: self.get_some(via, n, PROMPT))
        elif not self.m.ready and via == "get_nowait":
            self.expect_raises(chute.QueueEmpty, lambda: self.get_some(via, n, PROMPT))
        elif not self.m.ready:
            with pytest.raises(TimeoutError):
                self.get_some(via, n, self.caps.tiny_timeout)
        else:
            assert self.get_some(via, n, PROMPT) == self.took(self.take(n))

    def get_some(self, via: str, n: int, timeout: float) -> list[Any]:
        if via == "get_nowait":
            return [self.q.get_nowait()]
        if via == "get_batch":
            return self.run(self.q.get_batch(n, timeout=timeout))  # type: ignore[no-any-return]
        return [self.run(self.q.get(timeout=timeout))]

    @precondition(lambda self: self.m.gotten_not_done > 0 or self.m.unfinished == 0)
    @rule()
    def task_done(self) -> None:
        if self.m.unfinished == 0:
            self.expect_raises(ValueError, self.q.task_done)
        else:
            self.q.task_done()
            self.m.gotten_not_done -= 1
            self.m.unfinished -= 1

    @rule()
    def join(self) -> None:
        immediate = self.m.shutdown == "immediate"
        in_hand = self.m.held + self.m.gotten_not_done
        ends = immediate and self.caps.join_ends_at_immediate_shutdown and in_hand == 0
        if self.m.unfinished == 0 or ends:
            self.run(asyncio.wait_for(self.q.join(), PROMPT))
        else:
            # Not a sleep(0): long enough for a thread hop and a round trip.
            with pytest.raises(TimeoutError):
                self.run(asyncio.wait_for(self.q.join(), self.caps.join_patience))

    # -- reservations ---------------------------------------------------------------

    def claimed(self, job: Any) -> Held:
        [entry] = self.take(1)
        entry.deliveries += 1
        assert (job.item, job.deliveries) == (entry.item, entry.deliveries)
        assert (job.settled, job.outcome) == (False, None)
        self.m.held += 1
        return Held(job, entry)

    @rule(target=jobs, n=st.integers(1, 3))
    def reserve(self, n: int) -> Any:
        """``job = await q.reserve()``, ``n`` times (while the model has items):
        several jobs in hand at once, settled later in any order."""
        if self.gets_raise_shutdown():
            self.expect_raises(
                chute.QueueShutDown, lambda: self.run(self.q.reserve(timeout=PROMPT))
            )
            return multiple()
        if not self.m.ready:
            with pytest.raises(TimeoutError):
                self.run(self.q.reserve(timeout=self.caps.tiny_timeout))
            return multiple()
        n = min(n, len(self.m.ready))
        return multiple(*[self.claimed(self.run(self.q.reserve(timeout=PROMPT))) for _ in range(n)])

    @rule(fail=st.sampled_from([None, "ValueError", "RuntimeError"]))
    def handle_in_reserve(self, fail: str | None) -> None:
        """``async with q.reserve() as job``: a clean exit acks, an exception nacks."""
        if self.gets_raise_shutdown() or not self.m.ready:
            return  # reserve() covers the refusals
        error = ERRORS[fail](f"job failed ({next(self.numbers)})") if fail else None
        holder: list[Held] = []

        async def handle() -> None:
            async with self.q.reserve(timeout=PROMPT) as job:
                holder.append(self.claimed(job))
                if error is not None:
                    raise error

        if error is None:
            self.run(handle())
            self.settle(holder[0], ok=True, delay=None, error=None)
        else:
            with pytest.raises(type(error)):
                self.run(handle())
            self.settle(holder[0], ok=False, delay=None, error=error)

    @rule(held=consumes(jobs), awaited=st.booleans())
    def ack(self, held: Held, awaited: bool) -> None:
        """``job.ack()``, or ``await job.aack()`` where the transport has it."""
        if awaited and hasattr(held.job, "aack"):
            self.run(held.job.aack())
        else:
            held.job.ack()
        self.settle(held, ok=True, delay=None, error=None)

    @rule(
        held=consumes(jobs),
        delay=st.sampled_from([None, 0, LONG]),
        fail=st.sampled_from([None, "ValueError"]),
        awaited=st.booleans(),
    )
    def nack(self, held: Held, delay: float | None, fail: str | None, awaited: bool) -> None:
        """``job.nack(delay, error=)``, or ``await job.anack(...)`` where it exists."""
        error = ERRORS[fail](f"nacked ({next(self.numbers)})") if fail else None
        if awaited and hasattr(held.job, "anack"):
            self.run(held.job.anack(delay, error=error))
        else:
            held.job.nack(delay, error=error)
        self.settle(held, ok=False, delay=delay, error=error)

    def settle(self, held: Held, *, ok: bool, delay: float | None, error: Exception | None) -> None:
        """What settling does to the model; then the job must say the same."""
        m, e = self.m, held.entry
        m.held -= 1
        if error is not None:
            e.error = (type(error).__qualname__, str(error))
        dies = not ok and (
            m.shutdown == "immediate"
            or (m.max_deliveries is not None and e.deliveries >= m.max_deliveries)
        )
        if ok:
            outcome = "acked"
            m.unfinished -= 1
        elif dies:
            outcome = "dead"
            m.unfinished -= 1
            kind, message = e.error or (None, None)
            m.dead.append((e.item, e.deliveries, "failed", kind, message))
        else:
            outcome = "retried"
            if delay:
                m.delayed.append(e)
            else:
                self.give_back(e)
        assert (held.job.settled, held.job.outcome) == (True, outcome)
        self.settled.append(held)

    @precondition(lambda self: self.settled)
    @rule(pick=st.integers(0, 1 << 16), ack=st.booleans())
    def settle_again(self, pick: int, ack: bool) -> None:
        held = self.settled[pick % len(self.settled)]
        outcome = held.job.outcome
        self.expect_raises(chute.JobSettledError, held.job.ack if ack else held.job.nack)
        assert held.job.outcome == outcome

    # -- settings -------------------------------------------------------------------

    @rule(
        setting=st.sampled_from(["maxsize", "q.maxsize", "max_deliveries"]),
        value=st.sampled_from([None, 0, 1, 2, 3, 5]),
    )
    def configure(self, setting: str, value: int | None) -> None:
        """``configure(maxsize=)``, ``q.maxsize = n`` or ``configure(max_deliveries=)``."""
        if setting == "max_deliveries":
            value = value or None  # 0 is no limit here
            self.q.configure(max_deliveries=value)
            self.m.max_deliveries = value
            return
        value = value or 0
        if setting == "q.maxsize":
            self.q.maxsize = value
        else:
            self.q.configure(maxsize=value)
        self.m.maxsize = value

    # -- shutdown -------------------------------------------------------------------

    @precondition(lambda self: self.steps >= self.calm)
    @rule(immediate=st.booleans())
    def shutdown(self, immediate: bool) -> None:
        m = self.m
        removed = self.q.shutdown(immediate=immediate)
        stored: list[int] = []  # in queue order
        delayed: list[int] = []  # in no promised order
        if immediate:
            m.shutdown = "immediate"
            if self.caps.immediate_shutdown_removes:
                stored, m.ready = [e.item for e in m.ready], []
                if self.caps.immediate_shutdown_removes_delayed:
                    delayed, m.delayed = [e.item for e in m.delayed], []
                m.unfinished -= len(stored) + len(delayed)
        elif m.shutdown is None:
            m.shutdown = "plain"
        assert removed[: len(stored)] == stored
        assert sorted(removed[len(stored) :]) == sorted(delayed)

    @precondition(lambda self: self.caps.reopen)
    @rule()
    def reopen(self) -> None:
        self.q.reopen()
        self.m.shutdown = None

    # -- dead letters ---------------------------------------------------------------

    @rule(requeue=st.booleans())
    def dead_letters(self, requeue: bool) -> None:
        """``requeue_dead()``, or ``purge_dead()`` (each step compares ``dead_letters()``)."""
        m = self.m
        if not requeue:
            assert [_record(d) for d in self.q.purge_dead()] == m.dead
            m.dead = []
        elif m.shutdown:
            self.expect_raises(chute.QueueShutDown, self.q.requeue_dead)
        else:
            n = len(m.dead)
            if self.caps.requeue_within_maxsize and (room := m.room()) is not None:
                n = min(n, room)
            assert self.q.requeue_dead() == n
            moved, m.dead = m.dead[:n], m.dead[n:]
            self.store([Entry(item, next(self.seqs)) for item, *_ in moved])

    # -- what must hold after every step --------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        self.steps += 1  # invariants run once after every step
        if self.q is None:
            return
        m, q = self.m, self.q
        size, in_flight = len(m.ready), m.held + len(m.delayed)
        assert (q.qsize(), q.empty(), q.full(), q.maxsize) == (size, size == 0, m.full, m.maxsize)
        assert (q.unfinished_tasks, q.is_shutdown) == (m.unfinished, m.shutdown is not None)
        s = q.statistics()
        seen = {
            "size": s.size,
            "maxsize": s.maxsize,
            "in_flight": s.in_flight,
            "delayed": s.delayed,
            "dead_lettered": s.dead_lettered,
            "unfinished_tasks": s.unfinished_tasks,
            "shutdown": s.shutdown,
        }
        assert seen == {
            "size": size,
            "maxsize": m.maxsize,
            "in_flight": in_flight,
            "delayed": len(m.delayed),
            "dead_lettered": len(m.dead),
            "unfinished_tasks": m.unfinished,
            "shutdown": m.shutdown is not None,
        }
        # A stored queue says how long its oldest ready item has waited (an
        # in-process one keeps no put times: None).
        if size == 0 or self.kind not in STORED_KINDS:
            assert s.oldest_ready_age is None
        else:
            assert s.oldest_ready_age is not None
            assert s.oldest_ready_age >= 0
        # The awaitable forms, for code on a loop, where the transport has them
        # (the same but for that age, which grows meanwhile).
        if hasattr(q, "astatistics"):
            later = self.run(q.astatistics())
            assert replace(later, oldest_ready_age=s.oldest_ready_age) == s
        if hasattr(q, "aqsize"):
            assert self.run(q.aqsize()) == size
        assert [_record(d) for d in q.dead_letters()] == m.dead


#: The transports that keep put times (``statistics().oldest_ready_age``).
STORED_KINDS = {"sqlite", "redis", "postgres"}


def _record(d: Any) -> tuple[int, int, str, str | None, str | None]:
    return (d.item, d.deliveries, d.reason, d.error_type, d.error)


async def _then_idle(awaitable: Awaitable[R]) -> R:
    try:
        return await awaitable
    finally:
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            _done, pending = await asyncio.wait(others, timeout=PROMPT)
            assert not pending, f"the transport's background work never ended: {pending}"


def machine_for(kind: str) -> type[ModelMachine]:
    return type(f"{kind.capitalize()}Model", (ModelMachine,), {"kind": kind})


# -- the tests --------------------------------------------------------------------

# Sized so that each transport runs in well under a minute on a loaded CI machine.
EXAMPLES = {"memory": 500, "process": 300, "sqlite": 100, "redis": 60, "postgres": 60}


def model_settings(kind: str) -> settings:
    scale = float(os.environ.get("CHUTE_MODEL_EXAMPLES", "0")) or None
    return settings(
        max_examples=int(scale) if scale else EXAMPLES[kind],
        stateful_step_count=STEPS,
        deadline=None,
        derandomize=not os.environ.get("CHUTE_MODEL_RANDOM"),
        database=None,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# A passing run takes under a minute; a failing one also shrinks to the
# shortest sequence, which hypothesis gives up to five minutes.
@pytest.mark.timeout(420)
@pytest.mark.parametrize("kind", sorted(CAPABILITIES))
def test_transport_keeps_the_model(kind: str) -> None:
    run_state_machine_as_test(machine_for(kind), settings=model_settings(kind))
