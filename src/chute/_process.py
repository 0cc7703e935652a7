"""ProcessQueue: one queue in shared memory, for every process on the machine.

Layout. A file in ``/dev/shm`` (or the temporary folder where there is none)
is mapped by every process: a header of 64-bit cells, a table of *bells*,
and a ring of records ``[length][pickle]``. Positions in the ring grow for
ever; a record is published by one aligned 8-byte store of the tail, after
its bytes are written, so a process killed while writing leaves nothing
half-visible.

Locking. A POSIX named semaphore guards the header and the ring (held for
cursor updates and copies; pickling happens outside it; recovery after a
death and the first reservation's file creation happen under it too). A
waiter spins briefly before sleeping on it. The holder writes its pid
into the header; a waiter that cannot get the semaphore for a while checks
that pid, and if the holder is dead, takes the lock over (serialised by an
``flock`` that the kernel drops if the taker dies too) and repairs what the
dead holder may have left half-updated.

Waking. A process waits on a *bell*: a named pipe of its own (one per event
loop, one per thread), registered in the bell table under the lock with what
it waits for. Whoever makes progress possible rings one waiting bell per
item (or per free slot), after releasing the lock; nobody is rung when
nobody waits, and a waiter that was rung but gives up passes the ring on.
Event loops watch their bell with ``add_reader``: no helper thread, no
polling (a getter waiting while items are held by other processes looks
for dead holders every tenth of a second).

Reservations. A reserved item is copied to a file of the reserving handle's
before it leaves the ring; whoever finds its process dead gives it back.
(A named pipe rather than an ``eventfd``: another process can open a named
pipe by its path, but not another process's ``eventfd``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import io
import itertools
import json
import mmap
import os
import pickle
import secrets
import select
import struct
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from threading import get_ident
from typing import Any, Generic, TypeVar

from ._contract import (
    UNSET,
    DeadLetter,
    ErrorInfo,
    JobBase,
    Outcome,
    QueueStatistics,
    ReservationBase,
    SyncFaceBase,
    SyncReservationBase,
    Unset,
    check_delay,
    check_max_deliveries,
    check_max_items,
    check_maxsize,
    check_timeout,
)
from ._exceptions import ChuteError, JobSettledError, QueueEmpty, QueueFull, QueueShutDown
from ._waiters import Expired, check_not_on_loop, expire

# The C module behind multiprocessing's locks: named POSIX semaphores that an
# unrelated process can open by name (typeshed has no stubs for it).
_multiprocessing: Any = None
if sys.platform != "win32":
    import _multiprocessing  # type: ignore[import-not-found,no-redef]

__all__ = ["ProcessQueue"]

T = TypeVar("T")

_MAGIC = 0x65747568_63000002  # "chute", layout 2
_VERSION = 2  # 2: records carry their last error; dead letters say why

# Header cells (int64).
(
    H_MAGIC,
    H_VERSION,
    H_CAPACITY,
    H_MAXSIZE,
    H_HEAD,
    H_TAIL,
    H_COUNT,
    H_UNFINISHED,
    H_STATE,
    H_TOTAL_PUT,
    H_TOTAL_GOT,
    H_PEAK,
    H_HOLDER,
    H_PEERS,
    H_GET_WAITERS,
    H_PUT_WAITERS,
    H_JOIN_WAITERS,
    H_IN_FLIGHT,
    H_ROWS,
    H_MAX_DELIVERIES,
    H_DEAD,
    H_BATCH_PUTTERS,
    H_DELAYED,
) = range(23)
_HEADER_CELLS = 32

# The bell table: one row per bell (a loop or a thread of some process).
B_PID, B_BELL, B_GET, B_PUT, B_JOIN = range(5)
_EPOCH = 3  # B_GET + _EPOCH is the get epoch cell, and so on
B_BATCH = 8  # how many of the row's putters wait to put a batch (more than one item)
_BELL_CELLS = 9
_TOTALS = {B_GET: 14, B_PUT: 15, B_JOIN: 16}  # H_GET_WAITERS, H_PUT_WAITERS, H_JOIN_WAITERS
_MAX_BELLS = 256
# The processes holding reservations (pids), so that the living can give
# back what the dead held.
_HOLDERS_AT = _HEADER_CELLS + _MAX_BELLS * _BELL_CELLS
_MAX_HOLDERS = 256
# The ring starts on the first page boundary after the header and the tables.
_RING_OFFSET = -(-(_HOLDERS_AT + _MAX_HOLDERS) * 8 // 4096) * 4096
_WRAP = -1
# Any other negative length word is a gap to step over: -(bytes) - 1. Left
# where an item given back to the front could not end right at the head (see
# _give_back).
# A record's length word: the pickle's length, and in the high bits how many
# times the item has been handed out by reserve().
_LEN_BITS = 40
_LEN_MASK = (1 << _LEN_BITS) - 1
# A flag beside the delivery count (in a record's length word and a held
# entry): the payload is an envelope that carries the item's last error (see
# _wrap). Only given-back items have it: a plain put's record never does.
_CARRIES = 1 << 21
_DELIVERIES = _CARRIES - 1
# A dead letter's payload: died_at, the length of a JSON of why, that JSON,
# then the item's pickle.
_DEAD_HEAD = struct.Struct("<dQ")
_MAX_MAXSIZE = (1 << 63) - 1  # a header cell is an int64
# A process's reservations: a file of its own, [magic, end, live] then
# entries [state, deliveries, length, payload...].
_ARENA_MAGIC = 0x65747568_63A00001
_HELD, _SETTLED, _DELAYED = 1, 2, 3  # _DELAYED: held until a nack's delay ends
_ENTRY = 24
_RECOVERY_INTERVAL = 0.1  # seconds between looks for dead holders when idle

_OPEN, _SHUTDOWN, _IMMEDIATE = 0, 1, 2
_SPIN = 200  # non-blocking tries of the lock before sleeping on it
_SYNC_SPIN = 2000  # looks at the header before a blocked thread sleeps (~50 us)
_ASYNC_SPIN = 200  # the same for a task: short, it holds up its event loop
_YIELD_EVERY = 15  # spins give up the CPU once in 16 looks (a mask)
_LOCK_PATIENCE = 0.2  # seconds between checks that the lock holder is alive
_ORPHAN_LOCK = 1.0  # a lock held with no holder pid for this long: its taker died

_get_running_loop = asyncio._get_running_loop
_NO_RINGS: list[str] = []  # shared, never mutated: "no bell to ring"
_live: weakref.WeakSet[ProcessQueue[Any]] = weakref.WeakSet()
_bell_numbers = itertools.count(1)  # unique in this process, for every handle on any queue


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie (killed, not yet reaped by its parent)
    is dead here: it will never release a lock or settle a job."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, someone else's
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:  # no /proc (macOS), or gone meanwhile
        return True
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")


def _pad(n: int) -> int:
    return (n + 7) & ~7


class _Bell:
    """A named pipe this process reads; others write a byte to ring it."""

    __slots__ = ("fd", "number", "path", "row")

    def __init__(self, queue: ProcessQueue[Any]) -> None:
        self.number = next(_bell_numbers)
        self.path = f"{queue._base}.{os.getpid()}.{self.number}.bell"
        os.mkfifo(self.path, 0o600)
        # O_RDWR: the pipe always has a reader (us) and a writer, so opening
        # it for writing elsewhere never blocks and reads never see EOF.
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)
        self.row = -1

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class _ThreadBell:
    """Holds a thread's bell in its thread-local, so that the bell can be
    retired when the thread ends (a finaliser on this object)."""

    __slots__ = ("__weakref__", "bell")

    def __init__(self, bell: _Bell) -> None:
        self.bell = bell


def _retire(queue_ref: weakref.ref[ProcessQueue[Any]], bell: _Bell) -> None:
    queue = queue_ref()
    if queue is not None and not queue._closed:
        queue._retired.append(bell)  # freed at the queue's next unlock


class _LoopBell:
    """The bell of one event loop: wakes every task of that loop waiting here."""

    __slots__ = ("bell", "loop_ref", "reading", "waiters")

    def __init__(self, queue: ProcessQueue[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.bell = _Bell(queue)
        # Weakly: the loop is the key of the queue's weak table of loop bells,
        # and a strong reference from here would keep it alive for ever.
        self.loop_ref = weakref.ref(loop)
        self.waiters: list[asyncio.Future[None]] = []
        self.reading = False

    def add(self, fut: asyncio.Future[None]) -> None:
        # The reader stays registered between waits (two epoll_ctl calls per
        # wait are measurable); a ring that finds nobody waiting removes it.
        loop = self.loop_ref()
        if not self.reading and loop is not None:
            loop.add_reader(self.bell.fd, self._rung)
            self.reading = True
        self.waiters.append(fut)

    def discard(self, fut: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self.waiters.remove(fut)

    def _rung(self) -> None:
        self.bell.drain()
        loop = self.loop_ref()
        if not self.waiters and loop is not None:
            loop.remove_reader(self.bell.fd)
            self.reading = False
        for fut in self.waiters:
            if not fut.done():
                fut.set_result(None)


class ProcessQueue(Generic[T]):
    """A FIFO queue in shared memory, with the same API as ``chute.Queue``.

    Hand it to child processes (fork, spawn or forkserver), or attach to it
    by name from any process with :meth:`attach`. Items are pickled, so the
    same application must be at both ends. ``capacity`` is the ring's size
    in bytes: an item whose pickle does not fit is refused at ``put()``.

    The process that creates the queue owns it: :meth:`close` (or the end
    of that process) removes it from the system once it is not needed.
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        capacity: int = 1 << 20,
        name: str | None = None,
        max_deliveries: int | None = None,
    ) -> None:
        _check_platform()
        maxsize = _check_maxsize(maxsize)
        max_deliveries = check_max_deliveries(max_deliveries)
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError("capacity must be an int (bytes)")
        if capacity < 4096:
            raise ValueError(f"capacity must be at least 4096 bytes, not {capacity}")
        capacity = _pad(capacity)
        name = name or f"q{secrets.token_hex(6)}"
        _check_name(name)
        self._setup(name, owner=True)
        path = self._base
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            self._resources[4] = _join_peers(path, create=True)
            os.ftruncate(fd, _RING_OFFSET + capacity)
            self._sem = _multiprocessing.SemLock(1, 1, 1, self._sem_name, False)
        except BaseException:
            os.close(fd)
            _release(path, self._sem_name, self._resources, True, sem=False)
            raise
        try:
            self._map(fd)
        except BaseException:
            os.close(fd)
            _release(path, self._sem_name, self._resources, True)
            raise
        h = self._h
        h[H_CAPACITY] = capacity
        h[H_MAXSIZE] = maxsize
        h[H_MAX_DELIVERIES] = max_deliveries or 0
        h[H_VERSION] = _VERSION
        h[H_MAGIC] = _MAGIC  # last: attaching processes check it
        self._finalizer = weakref.finalize(
            self, _release, self._base, self._sem_name, self._resources, True
        )
        _live.add(self)  # only whole handles: fork children remake these

    @classmethod
    def attach(cls, name: str) -> ProcessQueue[Any]:
        """Attach to a queue created by another process, by its :attr:`name`."""
        _check_platform()
        _check_name(name)
        self = cls.__new__(cls)
        self._setup(name, owner=False)
        missing = ChuteError(
            f"no ProcessQueue named {name!r} on this machine "
            "(closed by its owner, or never created)"
        )
        try:
            self._resources[4] = _join_peers(self._base, create=False)
            fd = os.open(self._base, os.O_RDWR)
        except FileNotFoundError:
            self._leave_peers()
            raise missing from None
        try:
            if os.fstat(fd).st_size < _RING_OFFSET + 4096:
                raise ChuteError(f"{name!r} is not a chute ProcessQueue")
            self._map(fd)
            if self._h[H_MAGIC] != _MAGIC or self._h[H_VERSION] != _VERSION:
                raise ChuteError(f"{name!r} is not a chute ProcessQueue of this version")
            self._sem = _multiprocessing.SemLock._rebuild(0, 1, 1, self._sem_name)
        except BaseException:
            os.close(fd)
            self._leave_peers()
            raise
        self._finalizer = weakref.finalize(
            self, _release, self._base, self._sem_name, self._resources, False
        )
        _live.add(self)
        return self

    def _setup(self, name: str, owner: bool) -> None:
        self._name = name
        self._base = os.path.join(_shm_dir(), f"chute-{name}")
        self._sem_name = f"/chute-{name}"
        self._owner = owner
        self._pid = os.getpid()
        self._closed = False
        self._local = threading.Lock()  # guards the per-process state below
        self._loop_bells: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopBell] = (
            weakref.WeakKeyDictionary()
        )
        self._thread_bells = threading.local()
        self._ring_fds: dict[str, int] = {}
        self._orphan_since = 0.0
        self._holding = 0  # the thread of ours holding the lock
        self._ring_start = 0
        self._arena: _Arena | None = None
        self._dead: _Arena | None = None
        self._sync: ProcessSyncQueue[Any] | None = None
        self._next_recovery = 0.0
        self._pending_rings: list[str] = []  # found under the lock, rung after it
        self._retired: list[_Bell] = []  # bells of ended loops and threads
        # What finalize must release: [fd, mmap, [bells], [views of the map],
        # the peers file's descriptor (see _join_peers)].
        self._resources: list[Any] = [None, None, [], [], None]

    def _leave_peers(self) -> None:
        fd, self._resources[4] = self._resources[4], None
        if fd is not None:
            os.close(fd)

    def _map(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        self._fd = fd
        self._mm = mmap.mmap(fd, size)
        self._view = memoryview(self._mm)
        self._h = self._view[: _HEADER_CELLS * 8].cast("q")
        table_end = _HEADER_CELLS * 8 + _MAX_BELLS * _BELL_CELLS * 8
        self._table = self._view[_HEADER_CELLS * 8 : table_end].cast("q")
        self._holders = self._view[_HOLDERS_AT * 8 : (_HOLDERS_AT + _MAX_HOLDERS) * 8].cast("q")
        self._ring = self._view[_RING_OFFSET:]
        self._ring_q = self._ring.cast("q")  # record lengths: every record is 8-aligned
        self._capacity = size - _RING_OFFSET
        self._resources[0] = fd
        self._resources[1] = self._mm
        self._resources[3] = [
            self._h,
            self._table,
            self._holders,
            self._ring_q,
            self._ring,
            self._view,
        ]

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
        self._ring_bells([bell.path for bell in self._resources[2] if isinstance(bell, _Bell)])
        with contextlib.suppress(Exception), self._locked():
            self._give_back_all_held()
            for row in self._own_rows():
                self._table[row * _BELL_CELLS + B_PID] = 0
        self._closed = True
        for fd in self._ring_fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._ring_fds.clear()
        self._finalizer.detach()
        _release(self._base, self._sem_name, self._resources, self._owner)

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

    def _after_fork_in_child(self) -> None:
        # The child shares the mapping and the semaphore, not our bells.
        self._pid = os.getpid()
        self._local = threading.Lock()
        self._loop_bells = weakref.WeakKeyDictionary()
        self._thread_bells = threading.local()
        self._ring_fds = {}
        self._resources[2] = []
        self._retired = []
        self._arena = None  # the parent's reservations are the parent's
        self._dead = None
        self._owner = False
        # A hold on the peers file of our own: the inherited descriptor is
        # the parent's (closing our copy of it leaves the parent's hold).
        inherited, self._resources[4] = self._resources[4], None
        with contextlib.suppress(OSError):
            self._resources[4] = _join_peers(self._base, create=False)
        if inherited is not None:
            with contextlib.suppress(OSError):
                os.close(inherited)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self, _release, self._base, self._sem_name, self._resources, False
        )

    # -- the lock ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock()
        try:
            yield
        finally:
            self._unlock()

    def _lock(self) -> None:
        if self._closed:
            raise ChuteError("this ProcessQueue was closed in this process")
        sem = self._sem
        if not sem.acquire(False):
            # Held for a few microseconds at a time: spinning briefly beats
            # sleeping in the kernel, whose wake-up costs about ten.
            for _ in range(_SPIN):
                if sem.acquire(False):
                    break
            else:
                if not sem.acquire(True, _LOCK_PATIENCE):
                    self._lock_slowly()
        self._holding = get_ident()  # before the pid: see _lock_slowly
        self._h[H_HOLDER] = self._pid

    def _unlock(self) -> None:
        # Take the pending rings while still holding the lock: another thread
        # may add to the list as soon as we let go.
        rings = self._pending_rings
        if rings:
            self._pending_rings = []
        if self._retired:
            self._free_retired()
        self._h[H_HOLDER] = 0
        self._holding = 0
        self._sem.release()
        if rings:
            self._ring_bells(rings)

    def _lock_slowly(self) -> None:
        while True:
            holder = self._h[H_HOLDER]
            if holder == self._pid and self._holding == get_ident():
                # This very thread holds it, so it is not in a locked section:
                # an exception (a signal handler's) escaped between taking
                # the lock and the code that lets go of it. Take it back.
                if self._take_over(holder):
                    return
            elif holder and _alive(holder):
                self._orphan_since = 0.0
            elif holder == 0 and (
                not self._orphan_since or time.monotonic() - self._orphan_since < _ORPHAN_LOCK
            ):
                # Held by nobody we know: a process that died between taking
                # the semaphore and writing its pid, or one about to write it.
                self._orphan_since = self._orphan_since or time.monotonic()
            elif self._take_over(holder):
                self._orphan_since = 0.0
                return
            if self._sem.acquire(True, _LOCK_PATIENCE):
                self._orphan_since = 0.0
                return

    def _take_over(self, holder: int) -> bool:
        """The lock's holder is dead: become the holder, then repair."""
        # One taker at a time. A descriptor of its own: an flock belongs to the
        # open file description, which fork children share with us.
        fd = os.open(self._base, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._sem.acquire(False):
                return True  # released after all
            if self._h[H_HOLDER] != holder:
                return False  # someone else took over meanwhile
            self._h[H_HOLDER] = self._pid
            try:
                self._repair()
            except Exception:  # pragma: no cover - we hold the lock whatever happens
                pass
            return True
        finally:
            os.close(fd)  # drops the flock

    def _repair(self) -> None:
        """Make the header agree with the ring after a holder died mid-update.

        Records up to the tail are complete (the tail is stored last); the
        count is recomputed from them; the dead process's bells are cleared.
        """
        h, cap = self._h, self._capacity
        pos, tail, count = h[H_HEAD], h[H_TAIL], 0
        while pos < tail:
            phys = pos % cap
            n = self._ring_q[phys >> 3]
            if n < 0:
                pos += cap - phys if n == _WRAP else -n - 1
                continue
            n &= _LEN_MASK
            if n < 0 or phys + 8 + n > cap or pos + 8 + _pad(n) > tail:
                h[H_TAIL] = tail = pos  # cannot happen with whole stores; be safe
                break
            pos += 8 + _pad(n)
            count += 1
        h[H_COUNT] = count
        if h[H_UNFINISHED] < count:
            h[H_UNFINISHED] = count
        self._sweep_dead_bells()
        self._recover_dead_holders()

    def _sweep_dead_bells(self) -> None:
        t = self._table
        get = put = join = batch = 0
        for row in range(_MAX_BELLS):
            base = row * _BELL_CELLS
            pid = t[base + B_PID]
            if pid and pid != self._pid and not _alive(pid):
                for cell in range(_BELL_CELLS):
                    t[base + cell] = 0
            elif pid:
                get += t[base + B_GET]
                put += t[base + B_PUT]
                join += t[base + B_JOIN]
                batch += t[base + B_BATCH]
        h = self._h
        h[H_GET_WAITERS], h[H_PUT_WAITERS], h[H_JOIN_WAITERS] = get, put, join
        h[H_BATCH_PUTTERS] = batch

    # -- sizes and statistics ----------------------------------------------------------

    @property
    def maxsize(self) -> int:
        """The bound on stored items (0: unbounded), the same in every process.

        Assignable, as on ``queue.Queue``: a larger bound wakes the putters
        waiting in every process; a smaller one keeps the items stored. The
        ring's ``capacity`` in bytes bounds the queue too, whatever maxsize.
        """
        return self._h[H_MAXSIZE]

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self.configure(maxsize=value)

    @property
    def unfinished_tasks(self) -> int:
        """Items put (by any process) and not yet marked done."""
        return self._h[H_UNFINISHED]

    def configure(
        self,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
    ) -> None:
        """Change the bounds for every process; an argument not passed is kept.

        ``max_deliveries=None`` removes the limit. Both values are checked
        before either changes.
        """
        if not isinstance(maxsize, Unset):
            maxsize = _check_maxsize(maxsize)
        if not isinstance(max_deliveries, Unset):
            max_deliveries = check_max_deliveries(max_deliveries)
        with self._locked():
            if not isinstance(max_deliveries, Unset):
                self._h[H_MAX_DELIVERIES] = max_deliveries or 0
            if not isinstance(maxsize, Unset):
                self._h[H_MAXSIZE] = maxsize
                # Every putter looks again: a larger bound lets them in, and a
                # batch larger than a smaller one raises instead of sleeping.
                self._pending_rings.extend(self._to_ring(B_PUT))

    @property
    def capacity(self) -> int:
        """The ring's size in bytes: the largest pickled item it can hold, less 8."""
        return self._capacity

    def qsize(self) -> int:
        """The number of items stored now, exact across processes."""
        return self._h[H_COUNT]

    def empty(self) -> bool:
        return self._h[H_COUNT] == 0

    def full(self) -> bool:
        return 0 < self._h[H_MAXSIZE] <= self._h[H_COUNT]

    @property
    def is_shutdown(self) -> bool:
        return self._h[H_STATE] != _OPEN

    def statistics(self) -> QueueStatistics:
        with self._locked():
            h = self._h
            return QueueStatistics(
                size=h[H_COUNT],
                maxsize=h[H_MAXSIZE],
                getters_waiting=h[H_GET_WAITERS],
                putters_waiting=h[H_PUT_WAITERS],
                in_flight=h[H_IN_FLIGHT],
                total_put=h[H_TOTAL_PUT],
                total_got=h[H_TOTAL_GOT],
                peak_size=h[H_PEAK],
                dead_lettered=h[H_DEAD],
                unfinished_tasks=h[H_UNFINISHED],
                shutdown=h[H_STATE] != _OPEN,
                delayed=h[H_DELAYED],
            )

    def __repr__(self) -> str:
        if self._closed:
            return f"<chute.ProcessQueue {self._name!r} closed>"
        return (
            f"<chute.ProcessQueue {self._name!r} maxsize={self.maxsize} "
            f"qsize={self.qsize()}{' shut down' if self.is_shutdown else ''}>"
        )

    @property
    def sync(self) -> ProcessSyncQueue[T]:
        """The blocking ``queue.Queue`` face, for plain worker code."""
        face = self._sync
        if face is None:
            face = self._sync = ProcessSyncQueue(self)
        return face

    # -- records (lock held) ----------------------------------------------------------

    def _room(self, records: list[bytes], bounded: bool = True) -> bool:
        """Lock held: whether ``records`` fit the ring (and maxsize, if ``bounded``)."""
        h = self._h
        maxsize = h[H_MAXSIZE]
        if bounded and maxsize and h[H_COUNT] + len(records) > maxsize:
            return False
        cap, tail = self._capacity, h[H_TAIL]
        total = sum([(len(data) + 15) & ~7 for data in records])  # 8 + padded each
        if tail % cap + total <= cap:  # no wrap on the way: the common case
            return tail - h[H_HEAD] + total <= cap
        need = 0
        for data in records:
            rec = 8 + _pad(len(data))
            phys = (tail + need) % cap
            if cap - phys < rec:
                need += cap - phys
            need += rec
        return h[H_TAIL] - h[H_HEAD] + need <= cap

    def _write(self, records: list[bytes], deliveries: int = 0, new: bool = True) -> None:
        h, lengths, mm, cap = self._h, self._ring_q, self._mm, self._capacity
        tail = h[H_TAIL]
        for data in records:
            n = len(data)
            rec = 8 + _pad(n)
            phys = tail % cap
            if cap - phys < rec:
                lengths[phys >> 3] = _WRAP
                tail += cap - phys
                phys = 0
            start = _RING_OFFSET + phys + 8
            mm[start : start + n] = data
            lengths[phys >> 3] = n | (deliveries << _LEN_BITS)
            tail += rec
        h[H_TAIL] = tail  # publish: the records become visible at once
        count = h[H_COUNT] + len(records)
        h[H_COUNT] = count
        if new:  # not for an item given back: it was counted when first put
            h[H_UNFINISHED] += len(records)
            h[H_TOTAL_PUT] += len(records)
        if count > h[H_PEAK]:
            h[H_PEAK] = count

    def _restart_empty(self) -> None:
        """Lock held, ring empty (head == tail): restart at the ring's start,
        so that any record up to the whole capacity fits next time.

        Crash-safe in this order: a wrap marker first (so a walk from the
        old position skips to the boundary), then the tail, then the head.
        """
        h, cap = self._h, self._capacity
        tail = h[H_TAIL]
        phys = tail % cap
        if phys:
            self._ring_q[phys >> 3] = _WRAP
            start = tail + cap - phys
            h[H_TAIL] = start
            h[H_HEAD] = start

    def _read(self, max_items: int) -> list[bytes]:
        h, lengths, mm, cap = self._h, self._ring_q, self._mm, self._capacity
        head, tail = h[H_HEAD], h[H_TAIL]
        out: list[bytes] = []
        while head < tail and len(out) < max_items:
            phys = head % cap
            n = lengths[phys >> 3]
            if n < 0:
                head += cap - phys if n == _WRAP else -n - 1
                continue
            n &= _LEN_MASK
            start = _RING_OFFSET + phys + 8
            out.append(mm[start : start + n])
            head += 8 + _pad(n)
        count = h[H_COUNT] - len(out)
        h[H_HEAD] = head
        h[H_COUNT] = count
        if count == 0:
            self._restart_empty()
        h[H_TOTAL_GOT] += len(out)
        return out

    # -- bells ---------------------------------------------------------------------------

    def _own_rows(self) -> list[int]:
        return [b.row for b in self._resources[2] if b.row >= 0]

    def _register(self, bell: _Bell, kind: int, need: int = 1) -> int:
        """Count one local waiter of ``kind`` on ``bell``; returns the row's epoch.

        A ringer *consumes* the registrations it rings (zeroes the count and
        bumps the epoch), so later changes ring nobody until someone
        registers again: one ring per wait, not one per put.
        """
        t = self._table
        if bell.row < 0 or t[bell.row * _BELL_CELLS + B_PID] != self._pid:
            bell.row = self._claim_row(bell)
        base = bell.row * _BELL_CELLS
        t[base + kind] += 1
        self._h[_TOTALS[kind]] += 1
        if kind == B_PUT and need > 1:
            t[base + B_BATCH] += 1
            self._h[H_BATCH_PUTTERS] += 1
        return t[base + kind + _EPOCH]

    def _unregister(self, bell: _Bell, kind: int, epoch: int, need: int = 1) -> bool:
        """Take back a registration that no ring consumed (woken otherwise,
        timed out, cancelled). True if a ring did consume it."""
        t = self._table
        base = bell.row * _BELL_CELLS
        if t[base + B_PID] != self._pid or t[base + kind + _EPOCH] != epoch:
            return True
        if t[base + kind]:
            t[base + kind] -= 1
            self._h[_TOTALS[kind]] -= 1
        if kind == B_PUT and need > 1 and t[base + B_BATCH]:
            t[base + B_BATCH] -= 1
            self._h[H_BATCH_PUTTERS] -= 1
        return False

    def _pass_on(self, kind: int) -> None:
        """Lock held: a waiter that was rung gives up; ring another in its place."""
        self._pending_rings.extend(self._to_ring(kind, 1))

    def _claim_row(self, bell: _Bell) -> int:
        t = self._table
        for attempt in range(2):
            for row in range(_MAX_BELLS):
                base = row * _BELL_CELLS
                if t[base + B_PID] == 0:
                    for cell in range(_BELL_CELLS):
                        t[base + cell] = 0
                    t[base + B_BELL] = bell.number
                    t[base + B_PID] = self._pid
                    if row >= self._h[H_ROWS]:
                        self._h[H_ROWS] = row + 1  # rings scan only the rows ever used
                    return row
            if attempt == 0:
                self._sweep_dead_bells()
        raise ChuteError(f"more than {_MAX_BELLS} event loops and threads wait on this queue")

    def _to_ring(self, kind: int, limit: int = _MAX_BELLS) -> list[str]:
        """Consume the registrations of ``kind`` on up to ``limit`` bells; the
        bells to ring (lock held).

        One item put rings one bell, not every waiting process: with several
        waiting, waking all of them for one item costs each a wake-up and a
        lost race. A waiter that was rung but gives up passes the ring on.
        """
        total = _TOTALS[kind]
        if self._h[total] <= 0:
            return []
        if kind == B_PUT and self._h[H_BATCH_PUTTERS] > 0:
            # Room for one may not be room for a batch: ring every putter,
            # or a single putter behind a batch that cannot fit would sleep.
            limit = _MAX_BELLS
        t = self._table
        out: list[str] = []
        rows = self._h[H_ROWS]
        start = self._ring_start = (self._ring_start + 1) % rows  # no favourite
        for i in range(rows):
            base = ((start + i) % rows) * _BELL_CELLS
            n = t[base + kind]
            if n > 0:
                t[base + kind] = 0
                t[base + kind + _EPOCH] += 1
                self._h[total] -= n
                if kind == B_PUT and t[base + B_BATCH]:
                    self._h[H_BATCH_PUTTERS] -= t[base + B_BATCH]
                    t[base + B_BATCH] = 0
                pid = t[base + B_PID]
                if pid:
                    out.append(f"{self._base}.{pid}.{t[base + B_BELL]}.bell")
                    if len(out) >= limit:
                        break
        return out

    def _ring_bells(self, paths: list[str]) -> None:
        if not paths:
            return
        with self._local:
            failed = sum(1 for path in paths if not self._ring_one(path))
        if failed and not self._closed:
            # A ring went to a process that died (or is a zombie) while it
            # waited: it must not be the only one rung. Clear the dead rows
            # and ring as many others of either kind (a spare ring is harmless).
            with self._locked():
                self._sweep_dead_bells()
                self._pending_rings.extend(
                    self._to_ring(B_GET, failed) + self._to_ring(B_PUT, failed)
                )

    def _ring_one(self, path: str) -> bool:
        """Ring one bell; False if nobody reads it (its process died)."""
        for _attempt in range(2):
            fd = self._ring_fds.get(path)
            if fd is None:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError:
                    return False
                self._ring_fds[path] = fd
            try:
                os.write(fd, b"\0")
                return True
            except BlockingIOError:
                return True  # full of unread rings: it is rung already
            except OSError:
                # A cached pipe whose reader is gone (a new process may have
                # the same path now): reopen once.
                os.close(fd)
                del self._ring_fds[path]
        return False

    def _loop_bell(self, loop: asyncio.AbstractEventLoop) -> _LoopBell:
        lb = self._loop_bells.get(loop)
        if lb is None:
            with self._local:
                lb = self._loop_bells.get(loop)
                if lb is None:
                    lb = self._loop_bells[loop] = _LoopBell(self, loop)
                    self._resources[2].append(lb.bell)
                    # When the loop is gone, its bell (pipe, row) goes too.
                    weakref.finalize(loop, _retire, weakref.ref(self), lb.bell)
        return lb

    def _thread_bell(self) -> _Bell:
        holder: _ThreadBell | None = getattr(self._thread_bells, "holder", None)
        if holder is None:
            bell = _Bell(self)
            holder = self._thread_bells.holder = _ThreadBell(bell)
            with self._local:
                self._resources[2].append(bell)
            # The thread-local dies with its thread: retire the bell then.
            weakref.finalize(holder, _retire, weakref.ref(self), bell)
        return holder.bell

    def _free_retired(self) -> None:
        """Lock held: give back the rows and pipes of bells whose loop or thread
        has ended (retired by a finaliser, which must not take the lock)."""
        while self._retired:
            bell = self._retired.pop()
            t = self._table
            if bell.row >= 0 and t[bell.row * _BELL_CELLS + B_PID] == self._pid:
                base = bell.row * _BELL_CELLS
                for kind in (B_GET, B_PUT, B_JOIN):
                    self._h[_TOTALS[kind]] -= t[base + kind]
                self._h[H_BATCH_PUTTERS] -= t[base + B_BATCH]
                for cell in range(_BELL_CELLS):
                    t[base + cell] = 0
            bell.close()
            with contextlib.suppress(ValueError):
                self._resources[2].remove(bell)

    # -- the async face ------------------------------------------------------------------

    def _decode(self, records: list[bytes]) -> list[Any]:
        """Unpickle what a get took. If one cannot be unpickled here, nothing
        is lost: it goes to the dead letters, the others back to the front,
        and the caller gets a ChuteError saying so."""
        try:
            return [pickle.loads(r) for r in records]
        except Exception as exc:
            bad = next(i for i, r in enumerate(records) if not _loads_ok(r))
            with self._locked():
                try:
                    self._dead_letter(records[bad], 1, "undecodable")
                    h = self._h
                    if h[H_UNFINISHED] > 0:
                        h[H_UNFINISHED] -= 1
                except ChuteError:
                    self._give_back(records[bad], 0)
                rest = records[:bad] + records[bad + 1 :]
                for r in reversed(rest):
                    self._give_back(r, 0)
                self._pending_rings.extend(self._to_ring(B_GET, len(rest)))
            raise ChuteError(
                f"an item could not be unpickled in this process ({exc!r}); it was moved "
                "to the dead letters, and the other items taken with it went back"
            ) from exc

    def _encode(self, item: Any) -> bytes:
        data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
        if 8 + _pad(len(data)) > self._capacity:
            raise ValueError(
                f"item pickles to {len(data)} bytes; this queue's ring holds at most "
                f"{self._capacity - 8} (ProcessQueue(capacity=...))"
            )
        return data

    def _try_put(self, records: list[bytes]) -> list[str] | None:
        """Lock held. Wake list if stored, None if there is no room yet."""
        if self._h[H_STATE] != _OPEN:
            raise QueueShutDown()
        if not self._room(records):
            maxsize = self._h[H_MAXSIZE]
            if maxsize and len(records) > maxsize:  # the bound was lowered while it waited
                raise ValueError(
                    f"a batch of {len(records)} items can never fit a queue of maxsize {maxsize}"
                )
            return None
        self._write(records)
        return self._to_ring(B_GET, len(records))

    def _try_get(self, max_items: int) -> tuple[list[bytes], list[str]] | None:
        """Lock held. (records, bells to ring) or None if there is nothing yet."""
        state = self._h[H_STATE]
        if (
            self._h[H_COUNT] == 0
            and self._h[H_IN_FLIGHT]
            and time.monotonic() > self._next_recovery
        ):
            self._recover_dead_holders()  # idle, and some items are out: any held by the dead?
        if state == _IMMEDIATE or (state and self._h[H_COUNT] == 0):
            raise QueueShutDown()
        if self._h[H_COUNT] == 0:
            return None
        records = self._read(max_items)
        return records, self._to_ring(B_PUT, len(records))

    async def _wait(self, kind: int, attempt: Any, deadline: float | None, need: int = 1) -> Any:
        """Run ``attempt`` under the lock until it answers, sleeping on our bell.

        Items move only inside ``attempt``, under the lock, in this task: a
        wait that is cancelled or times out has changed nothing.
        """
        loop = asyncio.get_running_loop()
        lb = self._loop_bell(loop)
        epoch = -1
        spin = _ASYNC_SPIN
        while True:
            self._lock()
            try:
                rung = False
                if epoch >= 0:
                    rung = self._unregister(lb.bell, kind, epoch, need)
                    epoch = -1
                got = attempt()
                if got is None:
                    if deadline is not None and loop.time() >= deadline:
                        if rung:
                            self._pass_on(kind)
                        raise TimeoutError("timed out")
                    if not spin:
                        epoch = self._register(lb.bell, kind, need)
            finally:
                self._unlock()
            if got is None and spin:
                spin = self._spin(kind, spin)
                continue
            if got is not None:
                return got
            fut = loop.create_future()
            lb.add(fut)
            handle = None if deadline is None else loop.call_at(deadline, expire, fut)
            # Items out with other processes: look again now and then, in
            # case their holder died (nobody rings for that).
            poll = (
                loop.call_later(_RECOVERY_INTERVAL, _wake_future, fut)
                if kind == B_GET and self._h[H_IN_FLIGHT] > 0
                else None
            )
            try:
                await fut
            except Expired:
                pass  # one more attempt, then TimeoutError
            except BaseException:
                if not self._closed:
                    with self._locked():
                        if self._unregister(lb.bell, kind, epoch, need):
                            self._pass_on(kind)
                raise
            finally:
                lb.discard(fut)
                if handle is not None:
                    handle.cancel()
                if poll is not None:
                    poll.cancel()

    def _spin(self, kind: int, budget: int) -> int:
        """Watch the header (no lock) briefly before sleeping: the other side
        is often a few microseconds from making progress, and a sleep and a
        ring cost far more. Returns 0 (go to sleep next) or the budget left."""
        h, yield_cpu = self._h, os.sched_yield
        for i in range(budget):
            if not i & _YIELD_EVERY:
                # Let a process that would make progress (perhaps the one
                # we wait for) have this CPU: with more busy processes than
                # CPUs, a spin that only looks steals from the other side.
                yield_cpu()
            if kind == B_GET:
                if h[H_COUNT] or h[H_STATE]:
                    return budget - i - 1  # worth another try (0: then sleep)
            elif kind == B_PUT:
                maxsize = h[H_MAXSIZE]
                if h[H_STATE] or (maxsize and h[H_COUNT] < maxsize):
                    return budget - i - 1
            elif h[H_UNFINISHED] == 0:
                return budget - i - 1
        return 0

    async def put(self, item: T, timeout: float | None = None) -> None:
        """Put ``item``, waiting while full; same guarantees as ``chute.Queue.put``.

        The item is pickled first, in the caller: an item that cannot be
        pickled, or is larger than the ring, raises here and nothing is stored.
        """
        data = self._encode(item)
        if timeout is not None:
            timeout = check_timeout(timeout)
        wake = self._put_one(data)
        if wake is None:
            await self._put_records([data], timeout, item)
        elif wake:
            self._ring_bells(wake)

    def _put_one(self, data: bytes) -> list[str] | None:
        """The common put, in one short locked section: open, room, no wrap.

        None sends the caller down the general path (which waits, wraps, or
        raises QueueShutDown); the same logic as _room and _write, unrolled.
        """
        self._lock()
        try:
            h = self._h
            count, maxsize = h[H_COUNT], h[H_MAXSIZE]
            if h[H_STATE] or (maxsize and count >= maxsize):
                return None
            cap, tail, n = self._capacity, h[H_TAIL], len(data)
            rec = 8 + ((n + 7) & ~7)
            phys = tail % cap
            if cap - phys < rec or tail - h[H_HEAD] + rec > cap:
                return None
            start = _RING_OFFSET + phys + 8
            self._mm[start : start + n] = data
            self._ring_q[phys >> 3] = n
            h[H_TAIL] = tail + rec  # publish
            h[H_COUNT] = count + 1
            h[H_UNFINISHED] += 1
            h[H_TOTAL_PUT] += 1
            if count >= h[H_PEAK]:
                h[H_PEAK] = count + 1
            if h[H_GET_WAITERS] <= 0:
                return _NO_RINGS
            return self._to_ring(B_GET, 1)
        finally:
            self._unlock()

    def _get_one(self) -> tuple[bytes, list[str]] | None:
        """The common get, in one short locked section (see _put_one)."""
        self._lock()
        try:
            h = self._h
            count = h[H_COUNT]
            if not count or h[H_STATE]:
                return None
            cap, head = self._capacity, h[H_HEAD]
            phys = head % cap
            word = self._ring_q[phys >> 3]
            if word < 0:  # a wrap or a gap: the general path steps over it
                return None
            n = word & _LEN_MASK
            start = _RING_OFFSET + phys + 8
            data = self._mm[start : start + n]
            head += 8 + ((n + 7) & ~7)
            count -= 1
            h[H_HEAD] = head  # publish
            h[H_COUNT] = count
            if count == 0:
                self._restart_empty()
            h[H_TOTAL_GOT] += 1
            if h[H_PUT_WAITERS] <= 0:
                return data, _NO_RINGS
            return data, self._to_ring(B_PUT, 1)
        finally:
            self._unlock()

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
        if sum(8 + _pad(len(r)) for r in records) > self._capacity:
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
            wake = await self._wait(B_PUT, lambda: self._try_put(records), deadline, len(records))
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
        if got is None:
            return (await self._get_records(1, timeout))[0]  # type: ignore[no-any-return]
        data, wake = got
        if wake:
            self._ring_bells(wake)
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
            records, wake = await self._wait(B_GET, lambda: self._try_get(max_items), deadline)
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
            wake = self._to_ring(B_JOIN) if self._h[H_UNFINISHED] == 0 else []
        self._ring_bells(wake)

    async def join(self) -> None:
        """Wait until every item put (by any process) has been marked done."""
        await self._wait(B_JOIN, lambda: True if self._h[H_UNFINISHED] == 0 else None, None)

    def shutdown(self, immediate: bool = False) -> list[T]:
        """Shut the queue down for every process; see ``chute.Queue.shutdown``."""
        with self._locked():
            h = self._h
            removed: list[bytes] = []
            if immediate:
                h[H_STATE] = _IMMEDIATE
                removed = self._read(h[H_COUNT]) if h[H_COUNT] else []
                h[H_UNFINISHED] = max(0, h[H_UNFINISHED] - len(removed))
            elif h[H_STATE] == _OPEN:
                h[H_STATE] = _SHUTDOWN
            wake = self._to_ring(B_GET) + self._to_ring(B_PUT)
            if h[H_UNFINISHED] == 0:
                wake += self._to_ring(B_JOIN)
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

    # -- reservations (lock held unless said otherwise) -----------------------------

    def _own_arena(self) -> _Arena:
        arena = self._arena
        if arena is None:
            arena = self._arena = _Arena.create(
                f"{self._base}.{self._pid}.{next(_bell_numbers)}.held",
                max(self._capacity, 1 << 20),
            )
            self._resources[2].append(arena)
        return arena

    def _arena_paths(self, pid: int) -> list[str]:
        """The held-item files of ``pid``: one per handle it opened on the queue."""
        return glob.glob(glob.escape(f"{self._base}.{pid}.") + "*.held")

    def _try_reserve(self, _unused: object = None) -> tuple[Any, list[str]] | None:
        h = self._h
        if h[H_COUNT] == 0 and h[H_IN_FLIGHT] and time.monotonic() > self._next_recovery:
            self._recover_dead_holders()
        state = h[H_STATE]
        if state == _IMMEDIATE or (state and h[H_COUNT] == 0):
            raise QueueShutDown()
        if h[H_COUNT] == 0:
            return None
        cap, lengths = self._capacity, self._ring_q
        head = h[H_HEAD]
        phys = head % cap
        while (word := lengths[phys >> 3]) < 0:  # a wrap, or a gap to step over
            phys = 0 if word == _WRAP else phys - word - 1
        # The delivery count, with the _CARRIES flag riding along.
        n, deliveries = word & _LEN_MASK, (word >> _LEN_BITS) + 1
        start = _RING_OFFSET + phys + 8
        data = self._mm[start : start + n]
        arena = self._own_arena()
        # Kept in this process's file first, then taken from the ring: a
        # crash between the two delivers the item twice, never zero times.
        offset = arena.hold(data, deliveries)
        self._register_holder()
        self._read(1)
        h[H_IN_FLIGHT] += 1
        return (offset, data, deliveries), self._to_ring(B_PUT, 1)

    def _register_holder(self) -> None:
        cells, pid = self._holders, self._pid
        free = -1
        for i in range(_MAX_HOLDERS):
            if cells[i] == pid:
                return
            if free < 0 and cells[i] == 0:
                free = i
        if free < 0:
            self._recover_dead_holders()
            free = next((i for i in range(_MAX_HOLDERS) if cells[i] == 0), -1)
            if free < 0:
                raise ChuteError(f"more than {_MAX_HOLDERS} processes hold reservations")
        cells[free] = pid

    def _settle_held(
        self,
        offset: int,
        data: bytes,
        deliveries: int,
        ok: bool,
        undecodable: bool = False,
        error: ErrorInfo | None = None,
    ) -> tuple[list[str], Outcome]:
        """Lock held. Acknowledge (``ok``) or give back (or dead-letter) one
        held item; ``error``: the one it last failed with. Returns the bells
        to ring and how it ended."""
        arena = self._arena
        if arena is None or not arena.is_held(offset):
            raise JobSettledError("this job was already acknowledged or given back")
        h = self._h
        wake: list[str] = []
        dead = not ok and (undecodable or self._goes_dead(deliveries))
        if not ok and not dead:
            if error is not None:
                data, deliveries = self._wrap(data, deliveries, error)
            if not self._give_back(data, deliveries):
                raise _NoRoom
            wake = self._to_ring(B_GET, 1)
        elif h[H_UNFINISHED] <= 0:
            raise ValueError(
                "task_done() was already called for this item; settle a job "
                "with ack()/nack() instead of task_done()"
            )
        else:
            if dead:
                reason = "undecodable" if undecodable else "failed"
                self._dead_letter(data, deliveries, reason, error)
            h[H_UNFINISHED] -= 1
            if h[H_UNFINISHED] == 0:
                wake = self._to_ring(B_JOIN)
        self._let_go(arena, offset)
        return wake, ("retried" if not ok and not dead else "dead" if dead else "acked")

    def _let_go(self, arena: _Arena, offset: int) -> None:
        """Lock held: a held entry is settled (given back, dead, or done)."""
        if arena.cells[offset >> 3] == _DELAYED:
            self._h[H_DELAYED] -= 1
        arena.settle(offset)
        self._h[H_IN_FLIGHT] -= 1

    def _wrap(self, data: bytes, deliveries: int, error: ErrorInfo) -> tuple[bytes, int]:
        """The record that gives ``data`` back with its last error: an envelope
        that unpickles to the item itself (so a plain get needs nothing
        special), flagged with _CARRIES. Without the traceback, or without
        the error, where the ring could never hold it."""
        for info in (error, ErrorInfo(error.type, error.message, "")):
            wrapped = pickle.dumps(
                _Carried(data, json.dumps(info.to_dict())), pickle.HIGHEST_PROTOCOL
            )
            if 8 + _pad(len(wrapped)) <= self._capacity:
                return wrapped, (deliveries & _DELIVERIES) | _CARRIES
        return data, deliveries & _DELIVERIES

    # -- dead letters (lock held unless said otherwise) ------------------------------

    def _goes_dead(self, deliveries: int) -> bool:
        """A failed item goes to the dead letters after max_deliveries tries, or
        when the queue was shut down immediately (it has nowhere to go back to)."""
        maxd = self._h[H_MAX_DELIVERIES]
        return self._h[H_STATE] == _IMMEDIATE or bool(maxd and deliveries & _DELIVERIES >= maxd)

    def _dead_arena(self) -> _Arena:
        arena = self._dead
        if arena is None:
            path = f"{self._base}.dead"
            try:
                arena = _Arena.open(path)
            except FileNotFoundError:
                arena = _Arena.create(path, max(self._capacity, 1 << 20), exclusive=True)
            self._dead = arena
            self._resources[2].append(arena)
        return arena

    def _dead_letter(
        self, data: bytes, deliveries: int, reason: str, error: ErrorInfo | None = None
    ) -> None:
        """Lock held: keep ``data`` in the dead letters with why it died (the
        error given, else the one it carries from an earlier failure)."""
        if deliveries & _CARRIES:
            with contextlib.suppress(Exception):
                data, carried = _unwrap(data)
                error = error or carried
        why = json.dumps({"reason": reason, "error": error.to_dict() if error else None})
        meta = why.encode()
        record = _DEAD_HEAD.pack(time.time(), len(meta)) + meta + data
        try:
            self._dead_arena().hold(record, deliveries & _DELIVERIES)
        except ChuteError:
            raise ChuteError(
                f"the dead letters are full ({self._h[H_DEAD]} items); "
                "purge_dead() or requeue_dead() them first"
            ) from None
        self._h[H_DEAD] += 1

    def _return_held(self, data: bytes, deliveries: int) -> bool:
        """Give back (or dead-letter) an item a process held; False: no room yet."""
        if self._goes_dead(deliveries):
            try:
                self._dead_letter(data, deliveries, "lease expired")
            except ChuteError:  # the dead letters are full: back to the queue
                return self._give_back(data, deliveries)
            h = self._h
            if h[H_UNFINISHED] > 0:
                h[H_UNFINISHED] -= 1
                if h[H_UNFINISHED] == 0:
                    self._pending_rings.extend(self._to_ring(B_JOIN))
            return True
        return self._give_back(data, deliveries)

    def dead_letters(self) -> list[DeadLetter[T]]:
        """The items given up on, with why (the last error, deliveries, when,
        ``reason``), oldest first. An item that cannot be unpickled in this
        process is given as its pickle's ``bytes``."""
        with self._locked():
            if not self._h[H_DEAD]:
                return []
            held = self._dead_arena().held()
        return [_dead_record(payload, d) for _offset, payload, d in held]

    def purge_dead(self) -> list[DeadLetter[T]]:
        """Remove the dead letters and return them (records, as ``dead_letters()``)."""
        with self._locked():
            if not self._h[H_DEAD]:
                return []
            arena = self._dead_arena()
            held = arena.held()
            for offset, _payload, _d in held:
                arena.settle(offset)
            self._h[H_DEAD] = 0
        return [_dead_record(payload, d) for _offset, payload, d in held]

    def requeue_dead(self) -> int:
        """Put the dead letters back into the queue (as many as fit); how many."""
        with self._locked():
            if self._h[H_STATE] != _OPEN:
                raise QueueShutDown("cannot requeue into a shut down queue")
            if not self._h[H_DEAD]:
                return 0
            arena = self._dead_arena()
            moved = 0
            for offset, payload, _d in arena.held():
                data = _dead_parts(payload)[2]
                if not self._room([data]):
                    break
                self._write([data])
                arena.settle(offset)
                self._h[H_DEAD] -= 1
                moved += 1
            self._pending_rings.extend(self._to_ring(B_GET, moved))
        return moved

    def _give_back(self, data: bytes, deliveries: int) -> bool:
        """Put a reserved item back at the front (the end if it cannot go
        there). False if the ring has no room for it at all right now."""
        h, cap = self._h, self._capacity
        rec = 8 + _pad(len(data))
        head, tail = h[H_HEAD], h[H_TAIL]
        if tail - head + rec > cap:
            return False
        # Contiguous, ending at the head; or, where that would cross the
        # ring's end (a record larger than the space before the head, as
        # one carrying its last error), ending at the ring's end with a gap
        # word over the start of the ring up to the head.
        gap = head % cap if rec > head % cap else 0
        front = head - gap - rec
        if h[H_COUNT] and tail - front <= cap:
            phys = front % cap
            start = _RING_OFFSET + phys + 8
            self._mm[start : start + len(data)] = data
            self._ring_q[phys >> 3] = len(data) | (deliveries << _LEN_BITS)
            if gap:
                self._ring_q[0] = -gap - 1
            h[H_HEAD] = front  # publish
            h[H_COUNT] += 1
        else:
            # Counted when it was put, as at the front: the bound does not
            # apply (a give-back that waited for room would stall its holder).
            if not self._room([data], bounded=False):
                return False
            self._write([data], deliveries, new=False)
        return True

    def _give_back_all_held(self) -> None:
        """Lock held: this process is leaving; give back what it still holds."""
        arena = self._arena
        if arena is None:
            return
        given = 0
        for offset, data, deliveries in arena.held():
            if self._return_held(data, deliveries):
                self._let_go(arena, offset)
                given += 1
        if given:
            self._pending_rings.extend(self._to_ring(B_GET, given))
        if arena.live == 0:
            arena.remove()
            self._arena = None
            if not self._arena_paths(self._pid):  # no other handle of ours holds any
                self._forget_holder(self._pid)

    def _forget_holder(self, pid: int) -> None:
        cells = self._holders
        for i in range(_MAX_HOLDERS):
            if cells[i] == pid:
                cells[i] = 0

    def _recover_dead_holders(self) -> None:
        """Lock held: give back every item held by a process that died."""
        self._next_recovery = time.monotonic() + _RECOVERY_INTERVAL
        cells = self._holders
        dead = [cells[i] for i in range(_MAX_HOLDERS) if cells[i] and not _alive(cells[i])]
        for pid in dead:
            all_finished = True
            for path in self._arena_paths(pid):
                try:
                    arena = _Arena.open(path)
                except (FileNotFoundError, ValueError):
                    continue
                try:
                    for offset, data, deliveries in arena.held():
                        if not self._return_held(data, deliveries):
                            break  # no room now: the rest on a later look
                        self._let_go(arena, offset)
                    finished = arena.live == 0
                finally:
                    arena.close()
                if finished:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                else:
                    all_finished = False
            if all_finished:
                self._forget_holder(pid)
        if dead:
            wake = self._to_ring(B_GET)
            if wake:
                self._pending_rings.extend(wake)

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except QueueShutDown:
            raise StopAsyncIteration from None

    # -- blocking forms (ProcessSyncQueue) ------------------------------------------

    def _wait_blocking(
        self, kind: int, attempt: Any, deadline: float | None, what: str, need: int = 1
    ) -> Any:
        bell = self._thread_bell()
        epoch = -1
        spin = _SYNC_SPIN
        while True:
            self._lock()
            try:
                rung = False
                if epoch >= 0:
                    rung = self._unregister(bell, kind, epoch, need)
                    epoch = -1
                got = attempt()
                if got is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        if rung:
                            self._pass_on(kind)
                        raise _Expired
                    check_not_on_loop(what)
                    if not spin:
                        epoch = self._register(bell, kind, need)
            finally:
                self._unlock()
            if got is None and spin:
                spin = self._spin(kind, spin)
                continue
            if got is not None:
                return got
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if kind == B_GET and self._h[H_IN_FLIGHT] > 0:  # see _wait
                    remaining = (
                        _RECOVERY_INTERVAL
                        if remaining is None
                        else min(_RECOVERY_INTERVAL, remaining)
                    )
                select.select([bell.fd], [], [], remaining)
                bell.drain()
            except BaseException:
                with self._locked():
                    if self._unregister(bell, kind, epoch, need):
                        self._pass_on(kind)
                raise


class _Expired(Exception):
    pass


class _NoRoom(Exception):
    """A given-back item finds no room in the ring yet."""


class _Arena:
    """One process's reserved items, in a file of its own that others can read.

    An entry is written whole, then published by storing the new end; its
    state cell flips from held to settled in one store. If the process dies,
    whoever recovers reads the held entries and gives them back.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.mm = mmap.mmap(fd, os.fstat(fd).st_size)
        self.cells = memoryview(self.mm).cast("q")

    @classmethod
    def create(cls, path: str, size: int, exclusive: bool = False) -> _Arena:
        if not exclusive:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a dead process of the same pid long ago
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.ftruncate(fd, _pad(size) + 64)
        self = cls(path, fd)
        self.cells[1] = 64
        self.cells[0] = _ARENA_MAGIC
        return self

    @classmethod
    def open(cls, path: str) -> _Arena:
        fd = os.open(path, os.O_RDWR)
        self = cls(path, fd)
        if self.cells[0] != _ARENA_MAGIC:
            self.close()
            raise FileNotFoundError(path)
        return self

    @property
    def live(self) -> int:
        return self.cells[2]

    def hold(self, data: bytes, deliveries: int) -> int:
        end, n = self.cells[1], len(data)
        if end + _ENTRY + n > len(self.mm):
            raise ChuteError(
                "this process holds too many reserved items at once "
                f"({self.live}, {end} bytes); acknowledge some first"
            )
        c = end >> 3
        self.cells[c] = _HELD
        self.cells[c + 1] = deliveries
        self.cells[c + 2] = n
        self.mm[end + _ENTRY : end + _ENTRY + n] = data
        self.cells[1] = end + _ENTRY + _pad(n)  # publish
        self.cells[2] += 1
        return end

    def is_held(self, offset: int) -> bool:
        return 64 <= offset < self.cells[1] and self.cells[offset >> 3] in (_HELD, _DELAYED)

    def settle(self, offset: int) -> None:
        self.cells[offset >> 3] = _SETTLED
        self.cells[2] -= 1
        if self.cells[2] == 0:
            self.cells[1] = 64  # all settled: start again at the beginning

    def held(self) -> list[tuple[int, bytes, int]]:
        out = []
        pos, end = 64, self.cells[1]
        while pos < end:
            c = pos >> 3
            n = self.cells[c + 2]
            if self.cells[c] in (_HELD, _DELAYED):
                out.append((pos, self.mm[pos + _ENTRY : pos + _ENTRY + n], self.cells[c + 1]))
            pos += _ENTRY + _pad(n)
        return out

    def close(self) -> None:
        if self.fd < 0:
            return
        self.cells.release()
        self.mm.close()
        os.close(self.fd)
        self.fd = -1

    def remove(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class ProcessJob(JobBase[T]):
    """An item reserved from a ProcessQueue; settle it with ack() or nack()."""

    __slots__ = ("_data", "_error", "_offset", "_queue")

    def __init__(
        self,
        queue: ProcessQueue[T],
        offset: int,
        data: bytes,
        deliveries: int,
        error: ErrorInfo | None = None,
    ) -> None:
        super().__init__(pickle.loads(data), deliveries)
        self._queue = queue
        self._offset = offset
        self._data = data
        self._error = error  # the error of the item's last failed delivery

    def ack(self) -> None:
        """Done: the item leaves for good and counts as done for ``join()``."""
        self._settle(True)

    def nack(self, delay: float | None = None, *, error: BaseException | None = None) -> None:
        """Give the item back to the front of the queue (after ``delay`` seconds),
        or to the dead letters after ``max_deliveries`` tries. ``error`` (the
        exception it failed with) travels with the item and is shown by
        ``dead_letters()`` if it dies."""
        if delay is not None:
            delay = check_delay(delay)
        if self._settled:
            raise JobSettledError("this job was already acknowledged or given back")
        if error is not None:
            self._error = ErrorInfo.of(error)
        q = self._queue
        if delay and not q._goes_dead(self._deliveries):
            # Still held (in this process's file) until then: if the process
            # dies meanwhile, another gives it back.
            with q._locked():
                arena = q._arena
                if arena is None or not arena.is_held(self._offset):
                    raise JobSettledError("this job was already acknowledged or given back")
                arena.cells[self._offset >> 3] = _DELAYED
                q._h[H_DELAYED] += 1
            self._settled = True
            self._outcome = "retried"
            timer = threading.Timer(delay, self._settle_later)
            timer.daemon = True
            timer.start()
            return
        self._settle(False)

    def _settle_later(self) -> None:
        self._settled = False
        with contextlib.suppress(ChuteError):  # the queue was closed: it gave it back
            self._settle(False)

    def _settle(self, ok: bool) -> None:
        q = self._queue
        if self._settled:
            raise JobSettledError("this job was already acknowledged or given back")
        with q._locked():
            try:
                wake, outcome = q._settle_held(
                    self._offset, self._data, self._deliveries, ok, error=self._error
                )
            except _NoRoom:
                wake = None
        if wake is None:
            # The ring is full of bytes right now; it stays held and is given
            # back as soon as there is room.
            self._settled = True
            self._outcome = "retried"
            timer = threading.Timer(0.05, self._settle_later)
            timer.daemon = True
            timer.start()
            return
        self._settled = True
        self._outcome = outcome
        q._ring_bells(wake)


def _make_job(q: ProcessQueue[T], offset: int, data: bytes, deliveries: int) -> ProcessJob[T]:
    try:
        if deliveries & _CARRIES:
            raw, error = _unwrap(data)
            return ProcessJob(q, offset, raw, deliveries & _DELIVERIES, error)
        return ProcessJob(q, offset, data, deliveries)
    except Exception as exc:
        # As for get(): an item this process cannot unpickle goes to the dead
        # letters (given back, every consumer would meet it again for ever).
        with q._locked():
            wake, _outcome = q._settle_held(offset, data, deliveries, False, undecodable=True)
        q._ring_bells(wake)
        raise ChuteError(
            f"an item could not be unpickled in this process ({exc!r}); "
            "it was moved to the dead letters"
        ) from exc


class _Carried:
    """An item's pickle with the error it last failed with (JSON): pickled,
    it unpickles to the item alone (``_carried_item``), so a plain get of a
    given-back item needs no special case; ``_unwrap`` takes both out."""

    __slots__ = ("data", "error")

    def __init__(self, data: bytes, error: str) -> None:
        self.data = data
        self.error = error

    def __reduce__(self) -> tuple[Any, tuple[bytes, str]]:
        return (_carried_item, (self.data, self.error))


def _carried_item(data: bytes, error: str) -> Any:
    return pickle.loads(data)


class _Unwrapper(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (__name__, "_carried_item"):
            return lambda data, error: (data, error)
        raise pickle.UnpicklingError(f"not an envelope: {module}.{name}")


def _unwrap(wrapped: bytes) -> tuple[bytes, ErrorInfo | None]:
    """The item's pickle and its last error, out of an envelope (_Carried)."""
    data, error = _Unwrapper(io.BytesIO(wrapped)).load()
    return data, ErrorInfo.from_dict(json.loads(error))


def _dead_parts(payload: bytes) -> tuple[float, dict[str, Any], bytes]:
    """A dead letter's payload: (died_at, why, the item's pickle)."""
    died_at, n = _DEAD_HEAD.unpack_from(payload)
    start = _DEAD_HEAD.size
    why = json.loads(bytes(payload[start : start + n]))
    return died_at, why, payload[start + n :]


def _dead_record(payload: bytes, deliveries: int) -> DeadLetter[Any]:
    died_at, why, data = _dead_parts(payload)
    try:
        item = pickle.loads(data)
    except Exception:
        item = bytes(data)  # not here: the pickle, for a process that can
    error = ErrorInfo.from_dict(why.get("error"))
    if error is None:
        return DeadLetter(item, deliveries, died_at, why["reason"])
    return DeadLetter(
        item, deliveries, died_at, why["reason"], error.type, error.message, error.traceback
    )


def _check_maxsize(maxsize: object) -> int:
    value = check_maxsize(maxsize)
    if value > _MAX_MAXSIZE:
        raise ValueError(
            f"a ProcessQueue's maxsize must be at most 2**63 - 1 (a shared 64-bit cell), "
            f"not {value}; 0 means unbounded"
        )
    return value


class ProcessSyncReservation(SyncReservationBase[T]):
    """``with q.sync.reserve() as job`` for plain worker code."""

    __slots__ = ()
    _queue: ProcessQueue[T]

    def __enter__(self) -> ProcessJob[T]:
        q = self._queue
        try:
            (offset, data, deliveries), wake = q._wait_blocking(
                B_GET, q._try_reserve, _deadline(self._block, self._timeout), "a blocking reserve"
            )
        except _Expired:
            raise QueueEmpty("queue is empty") from None
        q._ring_bells(wake)
        job = _make_job(q, offset, data, deliveries)
        self._job = job
        return job


class ProcessReservation(ReservationBase[T]):
    """``async with q.reserve() as job`` (or ``job = await q.reserve()``)."""

    __slots__ = ()
    _queue: ProcessQueue[T]

    async def _take(self) -> ProcessJob[T]:
        q = self._queue
        loop = asyncio.get_running_loop()
        deadline = None if self._timeout is None else loop.time() + self._timeout
        try:
            (offset, data, deliveries), wake = await q._wait(B_GET, q._try_reserve, deadline)
        except TimeoutError:
            raise TimeoutError(f"reserve timed out after {self._timeout} seconds") from None
        q._ring_bells(wake)
        return _make_job(q, offset, data, deliveries)

    def __await__(self) -> Any:
        return self._take().__await__()

    async def __aenter__(self) -> ProcessJob[T]:
        job = await self._take()
        self._job = job
        return job


class ProcessSyncQueue(SyncFaceBase[T]):
    """``queue.Queue``'s API on a ProcessQueue, for plain (worker) code."""

    __slots__ = ("__dict__",)  # takes attributes and mocks, as queue.Queue does
    _q: ProcessQueue[T]

    @property
    def is_shutdown(self) -> bool:
        return self._q.is_shutdown

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        if block and timeout is not None:
            check_timeout(timeout)  # refused at the call, even when no wait is needed
        q = self._q
        data = q._encode(item)
        wake = q._put_one(data)
        if wake is None:
            self._put([data], block, timeout, item)
        elif wake:
            q._ring_bells(wake)

    def put_nowait(self, item: T) -> None:
        self._q.put_nowait(item)

    def put_batch(
        self, items: Iterable[T], block: bool = True, timeout: float | None = None
    ) -> None:
        batch = list(items)
        records = [self._q._encode(x) for x in batch]
        self._q._check_batch(records)
        self._put(records, block, timeout, batch)

    def _put(self, records: list[bytes], block: bool, timeout: float | None, original: Any) -> None:
        q = self._q
        deadline = _deadline(block, timeout)
        try:
            wake = q._wait_blocking(
                B_PUT, lambda: q._try_put(records), deadline, "a blocking put", len(records)
            )
        except _Expired:
            raise QueueFull(f"queue is full (maxsize={q.maxsize})") from None
        except QueueShutDown:
            if isinstance(original, list):
                raise QueueShutDown(items=original) from None
            raise QueueShutDown(item=original) from None
        q._ring_bells(wake)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        if block and timeout is not None:
            check_timeout(timeout)
        q = self._q
        got = q._get_one()
        if got is None:
            return self._get(1, block, timeout)[0]  # type: ignore[no-any-return]
        data, wake = got
        if wake:
            q._ring_bells(wake)
        return q._decode([data])[0]  # type: ignore[no-any-return]

    def get_nowait(self) -> T:
        return self._q.get_nowait()

    def get_batch(
        self, max_items: int, block: bool = True, timeout: float | None = None
    ) -> list[T]:
        check_max_items(max_items)
        return self._get(max_items, block, timeout)

    def _get(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        q = self._q
        deadline = _deadline(block, timeout)
        try:
            records, wake = q._wait_blocking(
                B_GET, lambda: q._try_get(max_items), deadline, "a blocking get"
            )
        except _Expired:
            raise QueueEmpty("queue is empty") from None
        q._ring_bells(wake)
        return q._decode(records)

    def task_done(self) -> None:
        self._q.task_done()

    def reserve(
        self, block: bool = True, timeout: float | None = None
    ) -> ProcessSyncReservation[T]:
        """``with q.sync.reserve() as job``: at-least-once, as the async form."""
        return ProcessSyncReservation(self._q, block, timeout)

    def join(self) -> None:
        q = self._q
        q._wait_blocking(
            B_JOIN, lambda: True if q._h[H_UNFINISHED] == 0 else None, None, "a blocking join"
        )


def _loads_ok(data: bytes) -> bool:
    try:
        pickle.loads(data)
    except Exception:
        return False
    return True


def _wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _deadline(block: bool, timeout: float | None) -> float | None:
    if timeout is not None:
        timeout = check_timeout(timeout)
    if not block:
        timeout = 0
    return None if timeout is None else time.monotonic() + timeout


def _check_platform() -> None:
    if sys.platform == "win32" or not hasattr(os, "mkfifo"):  # pragma: no cover
        raise ChuteError(
            "ProcessQueue needs POSIX shared memory, semaphores and named "
            f"pipes, which {sys.platform} does not offer"
        )


def _check_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 200
        or not all(c.isalnum() or c in "-_" for c in name)
    ):
        raise ValueError(f"a ProcessQueue name is 1-200 letters, digits, '-' or '_', not {name!r}")


def _join_peers(base: str, create: bool) -> int:
    """Hold the queue's peers file shared: the kernel lets go when we die.

    Who is attached is known by these holds, not by a count in the header
    that a killed process could never take back: a process that detaches
    and can then hold the file exclusively was the last one alive.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(base + ".peers", flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a last one removes the queue
        if os.fstat(fd).st_nlink == 0:  # it did: the queue is gone
            raise FileNotFoundError(base)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _last_out(fd: int) -> bool:
    """Let go of our shared hold; True if we now hold the peers file alone."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _release(
    base: str, sem_name: str, resources: list[Any], remove: bool, sem: bool = True
) -> None:
    """Free this process's hold on the queue; remove it from the system if
    this process owns it or was the last one attached."""
    fd, mm, bells, views, peers = resources
    resources[4] = None
    if peers is not None and not remove:
        remove = _last_out(peers)
    for bell in bells:
        bell.close()
    bells.clear()
    for view in reversed(views):
        with contextlib.suppress(Exception):
            view.release()
    if mm is not None:
        with contextlib.suppress(BufferError):
            mm.close()
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    if remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base)
        if sem:
            with contextlib.suppress(FileNotFoundError, OSError):
                _multiprocessing.sem_unlink(sem_name)
        # Bells, held-item files, and the peers file last (attachers wait on it).
        for leftover in sorted(
            glob.glob(glob.escape(base) + ".*"), key=lambda p: p.endswith(".peers")
        ):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
    if peers is not None:
        with contextlib.suppress(OSError):
            os.close(peers)


def _after_fork() -> None:
    for q in list(_live):
        if q._closed:
            continue
        try:
            q._after_fork_in_child()
        except BaseException:  # pragma: no cover - never seen; be safe
            # A handle this child cannot make its own must not be used as
            # the parent's (it would write the parent's pid as lock holder),
            # and must not keep the others from being made the child's.
            q._closed = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
