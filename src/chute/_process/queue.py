"""ProcessQueue: one queue in shared memory, for every process on the machine.

A file in ``/dev/shm`` (or the temporary folder where there is none) is
mapped by every process (``layout.py``); a named semaphore is the lock
(``lock.py``); processes sleep on bells (``bells.py``); reserved items are
kept in a file of the reserving process's (``held.py``). This module is the
public face, with the measured fast paths inline: an uncontended put or get
is one short locked section (``_put_one``, ``_get_one``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from threading import get_ident
from typing import Any, ClassVar, TypeVar

from .._contract import (
    check_max_deliveries,
    check_max_items,
    check_timeout,
)
from .._durable.backend import Capabilities
from .._exceptions import ChuteError, QueueEmpty, QueueFull, QueueShutDown
from .._waiters import GET, JOIN, PUT
from .bells import NO_RINGS, Bell
from .handle import _multiprocessing, check_name, check_platform, join_peers, live, release
from .job import ProcessReservation
from .layout import (
    B_PID,
    BELL_CELLS,
    BYTES_PICKLE,
    H_ADDED,
    H_CAPACITY,
    H_GET_WAITERS,
    H_HEAD,
    H_HOLDER,
    H_IN_FLIGHT,
    H_MAGIC,
    H_MAX_DELIVERIES,
    H_MAXSIZE,
    H_PEAK,
    H_PUT_WAITERS,
    H_REPAIR_DUE,
    H_STATE,
    H_TAIL,
    H_TAIL_HOLDER,
    H_TAKEN,
    H_TOTAL_GOT,
    H_TOTAL_PUT,
    H_UNFINISHED,
    H_VERSION,
    IMMEDIATE,
    INT_MASK,
    INT_PICKLE,
    LEN_MASK,
    MAGIC,
    OPEN,
    RING_OFFSET,
    SHUTDOWN,
    STOP,
    VERSION,
    check_shared_maxsize,
    pad,
    stored,
)
from .lock import SPLIT_LOCKS, acquire_soon
from .settings import Settings
from .sync import ProcessSyncQueue
from .waits import ASYNC_SPIN

__all__ = ["ProcessQueue"]

T = TypeVar("T")


class ProcessQueue(Settings[T]):
    """A FIFO queue in shared memory, with the same API as ``chute.Queue``.

    Hand it to child processes (fork, spawn or forkserver), or attach to it
    by name from any process with :meth:`attach`. Items are pickled, so the
    same application must be at both ends. ``capacity`` is the ring's size
    in bytes: an item whose pickle does not fit is refused at ``put()``.

    The process that creates the queue owns it: :meth:`close` (or the end
    of that process) removes it from the system once it is not needed.
    """

    #: What this transport offers (the contract suite reads it). Blocked
    #: callers of different processes race for the lock when woken, so
    #: arrival order holds per process, not across them.
    capabilities: ClassVar[Capabilities] = Capabilities(
        blocking_wait=True,
        arrival_order_across_clients=False,
        immediate_shutdown_removes=True,
        priorities=False,
        delays=True,
    )

    def __init__(
        self,
        maxsize: int = 0,
        *,
        capacity: int = 1 << 20,
        name: str | None = None,
        max_deliveries: int | None = None,
    ) -> None:
        check_platform()
        maxsize = check_shared_maxsize(maxsize)
        max_deliveries = check_max_deliveries(max_deliveries)
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError("capacity must be an int (bytes)")
        if capacity < 4096:
            raise ValueError(f"capacity must be at least 4096 bytes, not {capacity}")
        capacity = pad(capacity)
        name = name or f"q{secrets.token_hex(6)}"
        check_name(name)
        self._setup(name, owner=True)
        path = self._base
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            self._resources.peers = join_peers(path, create=True)
            os.ftruncate(fd, RING_OFFSET + capacity)
            self._sem = _multiprocessing.SemLock(1, 1, 1, self._sem_name, False)
            try:
                self._tail_sem = _multiprocessing.SemLock(1, 1, 1, self._tail_sem_name, False)
            except BaseException:
                _multiprocessing.sem_unlink(self._sem_name)  # ours: made just now
                raise
        except BaseException:
            os.close(fd)
            release(self._resources, remove=True, sem=False)
            raise
        try:
            self._map(fd)
        except BaseException:
            os.close(fd)
            release(self._resources, remove=True)
            raise
        h = self._h
        h[H_CAPACITY] = capacity
        h[H_MAXSIZE] = maxsize
        h[H_MAX_DELIVERIES] = max_deliveries or 0
        h[H_VERSION] = VERSION
        h[H_MAGIC] = MAGIC  # last: attaching processes check it
        self._finalize(remove=True)
        live.add(self)  # only whole handles: fork children remake these

    @classmethod
    def attach(cls, name: str) -> ProcessQueue[Any]:
        """Attach to a queue created by another process, by its :attr:`name`."""
        check_platform()
        check_name(name)
        self = cls.__new__(cls)
        self._setup(name, owner=False)
        missing = ChuteError(
            f"no ProcessQueue named {name!r} on this machine "
            "(closed by its owner, or never created)"
        )
        try:
            self._resources.peers = join_peers(self._base, create=False)
            fd = os.open(self._base, os.O_RDWR)
        except FileNotFoundError:
            self._leave_peers()
            raise missing from None
        try:
            if os.fstat(fd).st_size < RING_OFFSET + 4096:
                raise ChuteError(f"{name!r} is not a chute ProcessQueue")
            self._map(fd)
            if self._h[H_MAGIC] != MAGIC or self._h[H_VERSION] != VERSION:
                raise ChuteError(f"{name!r} is not a chute ProcessQueue of this version")
            self._sem = _multiprocessing.SemLock._rebuild(0, 1, 1, self._sem_name)
            self._tail_sem = _multiprocessing.SemLock._rebuild(0, 1, 1, self._tail_sem_name)
        except BaseException:
            os.close(fd)
            self._leave_peers()
            raise
        self._finalize(remove=False)
        live.add(self)
        return self

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # spawn/forkserver children (and pickles in general) attach by name.
        return (ProcessQueue.attach, (self._name,))

    # -- lifecycle ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name other processes attach with."""
        return self._name

    def close(self) -> None:
        """Detach this process; the owner (or the last to detach) removes the queue.

        "The last" counts live processes only: if the owner was killed, the
        last of the others to close removes the queue.
        """
        if self._closed:
            return
        # Wake this process's own waiters: they find the queue closed.
        self._ring_bells([bell.path for bell in self._resources.files if isinstance(bell, Bell)])
        with contextlib.suppress(Exception), self._locked():
            self._give_back_all_held()
            for row in self._own_rows():
                self._table[row * BELL_CELLS + B_PID] = 0
        self._closed = True
        for fd in self._ring_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._ring_fds.clear()
        self._finalizer.detach()
        release(self._resources, remove=self._owner)

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> ProcessQueue[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ProcessQueue[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def sync(self) -> ProcessSyncQueue[T]:
        """The blocking ``queue.Queue`` face, for plain worker code."""
        face = self._sync
        if face is None:
            face = self._sync = ProcessSyncQueue(self)
        return face

    def _encode(self, item: Any) -> bytes:
        data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        if 8 + pad(len(data)) > self._capacity:
            raise ValueError(
                f"item pickles to {len(data)} bytes; this queue's ring holds at most "
                f"{self._capacity - 8} (ProcessQueue(capacity=...))"
            )
        return data

    def _try_put(self, records: list[bytes]) -> list[str] | None:
        """Lock held. Wake list if stored, None if there is no room yet."""
        if self._h[H_STATE] != OPEN:
            raise QueueShutDown()
        if not records:
            return []  # an empty batch needs no room, even over a lowered bound
        if stored(self._h) == 0:
            self._restart_empty()  # (a get, holding the head lock alone, does not)
        if not self._room(records):
            maxsize = self._h[H_MAXSIZE]
            if maxsize and len(records) > maxsize:  # the bound was lowered while it waited
                raise ValueError(
                    f"a batch of {len(records)} items can never fit a queue of maxsize {maxsize}"
                )
            return None
        self._write(records)
        return self._to_ring(GET, len(records))

    def _try_get(self, max_items: int) -> tuple[list[bytes], list[str]] | None:
        """Lock held. (records, bells to ring) or None if there is nothing yet."""
        state = self._h[H_STATE]
        if stored(self._h) == 0 and self._h[H_IN_FLIGHT] and time.monotonic() > self._next_recovery:
            self._recover_dead_holders()  # idle, and some items are out: any held by the dead?
        empty = stored(self._h) == 0
        if state == IMMEDIATE or (state and empty):
            raise QueueShutDown()
        if empty:
            return None
        records = self._read(max_items)
        return records, self._to_ring(PUT, len(records))

    async def put(self, item: T, timeout: float | None = None) -> None:
        """Put ``item``, waiting while full; same guarantees as ``chute.Queue.put``.

        The item is pickled first, in the caller: an item that cannot be
        pickled, or is larger than the ring, raises here and nothing is stored.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        done = self._put_one(item)
        if not isinstance(done, list) and timeout != 0 and self._worth_again(PUT, ASYNC_SPIN):
            done = self._put_one(item)
        if not isinstance(done, list):  # not stored: the general path stores it
            await self._put_records([done or self._record(item)], timeout, item)
        elif done:
            self._ring_bells(done)

    def _put_one(self, item: Any) -> list[str] | bytes | None:
        """The common put, in one short section under the tail lock alone:
        open, room, no wrap.

        Returns the bells to ring once the item is stored. Otherwise the
        general path (which waits, wraps, or raises QueueShutDown) stores
        the item's pickle: returned, or None where it is ``_record(item)``,
        made only then and not under the lock. The same logic as _room and
        _write, unrolled, with the lock's fast path inline; a small int or a
        bytes is pickled straight into the ring (layout.INT_PICKLE,
        BYTES_PICKLE), the pickler's call and a copy of the bytes saved.

        The head side (``head``, ``taken``) is read without its lock: a get
        only moves it forward (a give-back, which moves it back, takes both
        locks), so the room seen is at most too little. The
        record's bytes are stored first, then the tail, then ``added``: a
        get that sees ``added`` grow finds the record whole (lock.py).
        """
        tp = type(item)
        if tp is int and -0x8000_0000 <= item < 0x8000_0000:
            n, data, length = 8, None, -1
        elif tp is bytes and len(item) <= self._bytes_max:
            length = len(item)
            n, data = length + 8, None
        else:
            data = self._encode(item)
            n, length = len(data), -1
        sem, h = self._tail_sem, self._h
        # Bells to retire are freed with both locks: see Lock._unlock.
        if (
            SPLIT_LOCKS
            and not (self._closed or self._retired)
            and (sem.acquire(False) or acquire_soon(sem))
        ):
            both = False
            self._tail_holding = get_ident()  # before the pid: see Lock._lock_slowly
            h[H_TAIL_HOLDER] = self._pid
        else:
            both = True
            self._lock()
        try:
            maxsize = h[H_MAXSIZE]
            taken = h[H_TAKEN]
            added = h[H_ADDED]
            cap, tail = self._capacity, h[H_TAIL]
            rec = 8 + ((n + 7) & ~7)
            phys = tail % cap
            if (
                h[H_STATE]
                or h[H_REPAIR_DUE]  # left for the general path, which repairs
                or (maxsize and added - taken >= maxsize)
                or cap - phys < rec
                or tail - h[H_HEAD] + rec > cap
            ):
                return data
            start = RING_OFFSET + phys + 8
            cell = phys >> 3
            if data is not None:
                self._mm[start : start + n] = data
            elif length < 0:
                self._ring_q[cell + 1] = INT_PICKLE | ((item & 0xFFFF_FFFF) << 24)
            else:
                # The first cell, then the bytes over its last byte, then STOP.
                self._ring_q[cell + 1] = BYTES_PICKLE | (length << 24)
                mm = self._mm
                mm[start + 7 : start + n - 1] = item
                mm[start + n - 1] = STOP
            self._ring_q[cell] = n
            h[H_TAIL] = tail + rec  # publish
            h[H_ADDED] = added + 1
            h[H_UNFINISHED] += 1
            h[H_TOTAL_PUT] += 1
            # A size there was (``taken`` read again: a get may have gone on
            # meanwhile; ``added`` stays ours until we let go).
            size = added + 1 - h[H_TAKEN]
            if size > h[H_PEAK]:
                h[H_PEAK] = size
            if h[H_GET_WAITERS] <= 0:
                return NO_RINGS
            return self._to_ring(GET, 1)
        finally:
            if both:
                self._unlock()
            else:
                # Taken while the lock is held: rings are added with both held.
                rings = self._pending_rings
                if rings:
                    self._pending_rings = []
                h[H_TAIL_HOLDER] = 0
                self._tail_holding = 0
                sem.release()
                if rings:
                    self._ring_bells(rings)

    def _record(self, item: Any) -> bytes:
        """The pickle _put_one writes for a small int or a bytes, as bytes."""
        if type(item) is int:
            return (INT_PICKLE | ((item & 0xFFFF_FFFF) << 24)).to_bytes(8, "little")
        head = (BYTES_PICKLE | (len(item) << 24)).to_bytes(8, "little")[:7]
        return b"".join((head, item, b"."))

    def _get_one(self) -> tuple[Any, bytes | None, list[str]] | None:
        """The common get, in one short section under the head lock alone
        (see _put_one; ``added`` is read before the record it counts).

        (item, None, bells) where the record was one of the pickles read
        without the pickler; else (None, record, bells), the record to be
        unpickled by the caller once the lock is let go. None where the
        general path must look: nothing stored, shut down, or a wrap at the
        head (stepped over there, with both locks).
        """
        sem, h = self._sem, self._h
        if not (self._closed or self._retired) and (sem.acquire(False) or acquire_soon(sem)):
            both = False
            self._holding = get_ident()  # before the pid: see Lock._lock_slowly
            h[H_HOLDER] = self._pid
        else:
            both = True
            self._lock()
        try:
            taken = h[H_TAKEN]
            if h[H_ADDED] == taken or h[H_STATE] or h[H_REPAIR_DUE]:
                return None  # (a repair due: the general path makes it)
            cap, head = self._capacity, h[H_HEAD]
            phys = head % cap
            cell = phys >> 3
            ring_q = self._ring_q
            word = ring_q[cell]
            if word < 0:  # a wrap or a gap: the general path steps over it
                return None
            n = word & LEN_MASK
            start = RING_OFFSET + phys + 8
            item: Any = None
            data: bytes | None = None
            first = ring_q[cell + 1] if n >= 8 else 0
            if n == 8 and first & INT_MASK == INT_PICKLE:
                item = (first >> 24) & 0xFFFF_FFFF
                if item & 0x8000_0000:
                    item -= 0x1_0000_0000
            elif (
                first & 0xFF_FFFF == BYTES_PICKLE
                and (first >> 24) & 0xFFFF_FFFF == n - 8
                and self._mm[start + n - 1] == STOP
            ):
                item = self._mm[start + 7 : start + n - 1]
            else:
                data = self._mm[start : start + n]
            h[H_HEAD] = head + 8 + ((n + 7) & ~7)  # publish
            h[H_TAKEN] = taken + 1
            h[H_TOTAL_GOT] += 1
            if h[H_PUT_WAITERS] <= 0:
                return item, data, NO_RINGS
            return item, data, self._to_ring(PUT, 1)
        finally:
            if both:
                self._unlock()
            else:
                # Taken while the lock is held: rings are added with both held.
                rings = self._pending_rings
                if rings:
                    self._pending_rings = []
                h[H_HOLDER] = 0
                self._holding = 0
                sem.release()
                if rings:
                    self._ring_bells(rings)

    async def put_batch(self, items: Iterable[T], timeout: float | None = None) -> None:
        """Put all ``items`` at once or none: one pickling pass, one lock."""
        batch = list(items)
        records = [self._encode(x) for x in batch]
        self._check_batch(records)
        await self._put_records(records, timeout, batch)

    def _check_batch(self, records: list[bytes]) -> None:
        maxsize = self.maxsize
        if maxsize and len(records) > maxsize:
            raise ValueError(
                f"a batch of {len(records)} items can never fit a queue of maxsize {maxsize}"
            )
        if sum(8 + pad(len(r)) for r in records) > self._capacity:
            raise ValueError(
                f"a batch this large never fits this queue's ring of {self._capacity} bytes"
            )

    async def _put_records(
        self, records: list[bytes], timeout: float | None, original: Any
    ) -> None:
        if timeout is not None:
            timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            wake = await self._wait(PUT, lambda: self._try_put(records), deadline, len(records))
        except TimeoutError:
            raise TimeoutError(f"put timed out after {timeout} seconds") from None
        except QueueShutDown:
            if isinstance(original, list):
                raise QueueShutDown(items=original) from None
            raise QueueShutDown(item=original) from None
        self._ring_bells(wake)

    def put_nowait(self, item: T) -> None:
        records = [self._encode(item)]
        with self._locked():
            try:
                wake = self._try_put(records)
            except QueueShutDown:
                raise QueueShutDown(item=item) from None
        if wake is None:
            raise QueueFull(f"queue is full (maxsize={self.maxsize})")
        self._ring_bells(wake)

    async def get(self, timeout: float | None = None) -> T:
        """Remove and return the next item, waiting while empty."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        got = self._get_one()
        if got is None and timeout != 0 and self._worth_again(GET, ASYNC_SPIN):
            got = self._get_one()
        if got is None:
            return (await self._get_records(1, timeout))[0]  # type: ignore[no-any-return]
        item, data, wake = got
        if wake:
            self._ring_bells(wake)
        if data is None:
            return item  # type: ignore[no-any-return]
        return self._decode([data])[0]  # type: ignore[no-any-return]

    async def get_batch(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Wait for at least one item, then take up to ``max_items`` under one lock."""
        check_max_items(max_items)
        return await self._get_records(max_items, timeout)

    async def _get_records(self, max_items: int, timeout: float | None) -> list[Any]:
        if timeout is not None:
            timeout = check_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            records, wake = await self._wait(GET, lambda: self._try_get(max_items), deadline)
        except TimeoutError:
            raise TimeoutError(f"get timed out after {timeout} seconds") from None
        self._ring_bells(wake)
        return self._decode(records)

    def get_nowait(self) -> T:
        with self._locked():
            got = self._try_get(1)
        if got is None:
            raise QueueEmpty("queue is empty")
        self._ring_bells(got[1])
        return self._decode(got[0])[0]  # type: ignore[no-any-return]

    def task_done(self) -> None:
        with self._locked():
            if self._h[H_UNFINISHED] <= 0:
                raise ValueError("task_done() called too many times")
            self._h[H_UNFINISHED] -= 1
            wake = self._to_ring(JOIN) if self._h[H_UNFINISHED] == 0 else []
        self._ring_bells(wake)

    async def join(self) -> None:
        """Wait until every item put (by any process) has been marked done."""
        await self._wait(JOIN, lambda: True if self._h[H_UNFINISHED] == 0 else None, None)

    def shutdown(self, immediate: bool = False) -> list[T]:
        """Shut the queue down for every process; see ``chute.Queue.shutdown``."""
        with self._locked():
            h = self._h
            removed: list[bytes] = []
            if immediate:
                h[H_STATE] = IMMEDIATE
                removed = self._read(stored(h)) if stored(h) else []
                h[H_UNFINISHED] = max(0, h[H_UNFINISHED] - len(removed))
            elif h[H_STATE] == OPEN:
                h[H_STATE] = SHUTDOWN
            wake = self._to_ring(GET) + self._to_ring(PUT)
            if h[H_UNFINISHED] == 0:
                wake += self._to_ring(JOIN)
        self._ring_bells(wake)
        return [pickle.loads(r) for r in removed]

    def reserve(self, timeout: float | None = None) -> ProcessReservation[T]:
        """Take the next item at least once, even across the death of this process.

        ``async with q.reserve() as job``: a clean exit acknowledges the item,
        an exception gives it back to the front of the queue. Until then the
        item is kept in a file of this process's; if the process dies, the
        next process that finds the queue idle gives it back, with
        ``job.deliveries`` counting every hand-out.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        return ProcessReservation(self, timeout)

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except QueueShutDown:
            raise StopAsyncIteration from None
