"""An arena: items kept in a file of one process's, that others can read.

A process's reservations live in an arena of its own (``{base}.{pid}.{n}.held``)
until settled: if the process dies, whoever recovers reads the entries still
held and gives them back. The queue's dead letters are an arena too
(``{base}.dead``), shared by every process.

The file: three cells (``A_MAGIC``, ``A_END``: where the next entry goes,
``A_LIVE``: entries not settled), then from ``FIRST`` the entries
``[state, deliveries, length][payload, padded to 8]``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import NamedTuple

from .._exceptions import ChuteError
from .layout import pad

__all__ = ["DELAYED", "HELD", "SETTLED", "Arena", "HeldEntry"]

ARENA_MAGIC = 0x65747568_63A00001
A_MAGIC, A_END, A_LIVE = 0, 1, 2  # the file's first cells
FIRST = 64  # the first entry's offset
E_STATE, E_DELIVERIES, E_LENGTH = 0, 1, 2  # an entry's cells
ENTRY = 24  # an entry's cells, in bytes
HELD, SETTLED, DELAYED = 1, 2, 3  # DELAYED: held until a nack's delay ends


class HeldEntry(NamedTuple):
    """An entry still held: where it is, its payload, its delivery count
    (with the ``CARRIES`` flag where the payload carries its last error)."""

    offset: int
    data: bytes
    deliveries: int


class Arena:
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
    def create(cls, path: str, size: int, *, exclusive: bool = False) -> Arena:
        if not exclusive:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a dead process of the same pid long ago
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.ftruncate(fd, pad(size) + 64)
        self = cls(path, fd)
        self.cells[A_END] = FIRST
        self.cells[A_MAGIC] = ARENA_MAGIC
        return self

    @classmethod
    def open(cls, path: str) -> Arena:
        fd = os.open(path, os.O_RDWR)
        self = cls(path, fd)
        if self.cells[A_MAGIC] != ARENA_MAGIC:
            self.close()
            raise FileNotFoundError(path)
        return self

    def state(self, offset: int) -> int:
        """The state of the entry at ``offset``: HELD, SETTLED or DELAYED."""
        return self.cells[(offset >> 3) + E_STATE]

    def set_state(self, offset: int, state: int) -> None:
        self.cells[(offset >> 3) + E_STATE] = state

    @property
    def live(self) -> int:
        return self.cells[A_LIVE]

    def hold(self, data: bytes, deliveries: int) -> int:
        end, n = self.cells[A_END], len(data)
        if end + ENTRY + n > len(self.mm):
            raise ChuteError(
                "this process holds too many reserved items at once "
                f"({self.live}, {end} bytes); acknowledge some first"
            )
        c = end >> 3
        self.cells[c + E_STATE] = HELD
        self.cells[c + E_DELIVERIES] = deliveries
        self.cells[c + E_LENGTH] = n
        self.mm[end + ENTRY : end + ENTRY + n] = data
        self.cells[A_END] = end + ENTRY + pad(n)  # publish
        self.cells[A_LIVE] += 1
        return end

    def is_held(self, offset: int) -> bool:
        return FIRST <= offset < self.cells[A_END] and self.state(offset) in (HELD, DELAYED)

    def settle(self, offset: int) -> None:
        self.cells[(offset >> 3) + E_STATE] = SETTLED
        self.cells[A_LIVE] -= 1
        if self.cells[A_LIVE] == 0:
            self.cells[A_END] = FIRST  # all settled: start again at the beginning

    def held(self) -> list[HeldEntry]:
        """The entries still held (delayed ones too), oldest first."""
        out = []
        pos, end = FIRST, self.cells[A_END]
        while pos < end:
            c = pos >> 3
            n = self.cells[c + E_LENGTH]
            if self.cells[c + E_STATE] in (HELD, DELAYED):
                data = self.mm[pos + ENTRY : pos + ENTRY + n]
                out.append(HeldEntry(pos, data, self.cells[c + E_DELIVERIES]))
            pos += ENTRY + pad(n)
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
