"""This process's handle on a shared queue: its fields, its files, its end.

``ProcessHandle`` is the bottom of ProcessQueue's layers (``handle`` <-
``ring`` <- ``bells`` <- ``lock`` <- ``dead`` <- ``held`` <- ``waits`` <-
``settings`` <- ``queue``): it declares every field the layers read, maps the shared file,
and keeps what must be let go of in ``Resources``, which a finaliser holds
(never the handle itself), so that a handle dropped without ``close()`` still
frees its pipes, its mapping and its hold on the queue.

The layers are one object, not objects that hold each other: each reads the
same shared-memory views under the same lock, and the fast paths read them
straight from ``self`` (an extra object hop per locked section is
measurable at a microsecond a put).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import mmap
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._exceptions import ChuteError
from .layout import (
    BELL_CELLS,
    HEADER_CELLS,
    HOLDERS_AT,
    MAX_BELLS,
    MAX_HOLDERS,
    RING_OFFSET,
    shm_dir,
)

if TYPE_CHECKING:
    from .arena import Arena
    from .bells import Bell, LoopBell
    from .sync import ProcessSyncQueue

# The C module behind multiprocessing's locks: named POSIX semaphores that an
# unrelated process can open by name (typeshed has no stubs for it).
_multiprocessing: Any = None
if sys.platform != "win32":
    import _multiprocessing  # type: ignore[import-not-found,no-redef]

__all__ = [
    "ProcessHandle",
    "Resources",
    "alive",
    "check_name",
    "check_platform",
    "join_peers",
    "release",
]

T = TypeVar("T")


@dataclass(slots=True)
class Resources:
    """What this process must let go of when its handle ends."""

    base: str  # the shared file's path; bells and held files start with it
    sem_names: tuple[str, str]  # the head lock's and the tail lock's
    fd: int | None = None  # the shared file
    mm: mmap.mmap | None = None
    files: list[Any] = field(default_factory=list)  # bells and held-item files (.close())
    views: list[memoryview] = field(default_factory=list)  # released before the map
    peers: int | None = None  # our shared hold on the peers file (see join_peers)


# Every whole handle of this process: fork children make them their own.
live: weakref.WeakSet[ProcessHandle[Any]] = weakref.WeakSet()


class ProcessHandle(Generic[T]):
    """The fields of a ProcessQueue handle, and its hold on the shared files."""

    # The shared file, mapped: the header, the bell table, the holders, the ring.
    _mm: mmap.mmap
    _view: memoryview
    _h: memoryview  # the header's cells (layout.H_*)
    _table: memoryview  # the bell table's cells (layout.B_*)
    _holders: memoryview
    _ring: memoryview
    _ring_q: memoryview  # the ring as 8-byte cells: record length words
    _capacity: int
    _bytes_max: int
    _fd: int
    _sem: Any  # the head lock: a named POSIX semaphore (see lock.py)
    _tail_sem: Any  # the tail lock: another
    _finalizer: weakref.finalize[Any, Any]

    def _setup(self, name: str, *, owner: bool) -> None:
        self._name = name
        self._base = os.path.join(shm_dir(), f"chute-{name}")
        self._sem_name = f"/chute-{name}"
        self._tail_sem_name = f"/chute-{name}.tail"
        self._owner = owner
        self._pid = os.getpid()
        self._closed = False
        self._local = threading.Lock()  # guards the per-process state below
        self._loop_bells: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBell] = (
            weakref.WeakKeyDictionary()
        )
        self._thread_bells = threading.local()
        self._ring_fds: dict[str, int] = {}
        self._orphan_since = 0.0
        self._holding = 0  # the thread of ours holding the head lock
        self._tail_holding = 0  # and the tail lock
        self._ring_start = 0
        self._arena: Arena | None = None
        self._dead: Arena | None = None
        self._sync: ProcessSyncQueue[Any] | None = None
        self._next_recovery = 0.0
        self._pending_rings: list[str] = []  # found under the lock, rung after it
        self._retired: list[Bell] = []  # bells of ended loops and threads
        self._resources = Resources(self._base, (self._sem_name, self._tail_sem_name))

    def _leave_peers(self) -> None:
        fd, self._resources.peers = self._resources.peers, None
        if fd is not None:
            os.close(fd)

    def _map(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        self._fd = fd
        self._mm = mmap.mmap(fd, size)
        self._view = memoryview(self._mm)
        self._h = self._view[: HEADER_CELLS * 8].cast("q")
        table_end = HEADER_CELLS * 8 + MAX_BELLS * BELL_CELLS * 8
        self._table = self._view[HEADER_CELLS * 8 : table_end].cast("q")
        self._holders = self._view[HOLDERS_AT * 8 : (HOLDERS_AT + MAX_HOLDERS) * 8].cast("q")
        self._ring = self._view[RING_OFFSET:]
        self._ring_q = self._ring.cast("q")  # record lengths: every record is 8-aligned
        self._capacity = size - RING_OFFSET
        # The longest bytes _put_one pickles itself (a 4-byte length, and room).
        self._bytes_max = min(self._capacity - 24, 0xFFFF_FFFF)
        res = self._resources
        res.fd = fd
        res.mm = self._mm
        res.views = [self._h, self._table, self._holders, self._ring_q, self._ring, self._view]

    def _finalize(self, *, remove: bool) -> None:
        """Let go of our resources when this handle is collected, if not closed."""
        self._finalizer = weakref.finalize(self, release, self._resources, remove=remove)

    def _after_fork_in_child(self) -> None:
        # The child shares the mapping and the semaphore, not our bells.
        self._pid = os.getpid()
        self._local = threading.Lock()
        self._loop_bells = weakref.WeakKeyDictionary()
        self._thread_bells = threading.local()
        self._ring_fds = {}
        self._resources.files = []
        self._retired = []
        self._arena = None  # the parent's reservations are the parent's
        self._dead = None
        self._owner = False
        # A hold on the peers file of our own: the inherited descriptor is
        # the parent's (closing our copy of it leaves the parent's hold).
        inherited, self._resources.peers = self._resources.peers, None
        with contextlib.suppress(OSError):
            self._resources.peers = join_peers(self._base, create=False)
        if inherited is not None:
            with contextlib.suppress(OSError):
                os.close(inherited)
        self._finalizer.detach()
        self._finalize(remove=False)

    # Provided by the layers above (lock.py, held.py); declared here so that
    # every layer type-checks on its own.

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _recover_dead_holders(self) -> None:
        raise NotImplementedError


def alive(pid: int) -> bool:
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


def check_platform() -> None:
    if sys.platform == "win32" or not hasattr(os, "mkfifo"):  # pragma: no cover
        raise ChuteError(
            "ProcessQueue needs POSIX shared memory, semaphores and named "
            f"pipes, which {sys.platform} does not offer"
        )


def check_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 200
        or not all(c.isalnum() or c in "-_" for c in name)
    ):
        raise ValueError(f"a ProcessQueue name is 1-200 letters, digits, '-' or '_', not {name!r}")


def join_peers(base: str, create: bool) -> int:
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


def last_out(fd: int) -> bool:
    """Let go of our shared hold; True if we now hold the peers file alone."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def release(res: Resources, *, remove: bool, sem: bool = True) -> None:
    """Free this process's hold on the queue; remove it from the system if
    this process owns it (``remove``) or was the last one attached."""
    peers, res.peers = res.peers, None
    if peers is not None and not remove:
        remove = last_out(peers)
    for file in res.files:
        file.close()
    res.files.clear()
    for view in reversed(res.views):
        with contextlib.suppress(Exception):
            view.release()
    if res.mm is not None:
        with contextlib.suppress(BufferError):
            res.mm.close()
    if res.fd is not None:
        with contextlib.suppress(OSError):
            os.close(res.fd)
    base = res.base
    if remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(base)
        if sem:
            for sem_name in res.sem_names:
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
    for q in list(live):
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
