"""The shared file's layout: the header, the bell table, the holders, the ring.

Every process maps the same file; this module is the one place that says
where each thing is in it. A file of another layout is refused at attach
(``MAGIC`` and ``VERSION``).

- The *header*: 64-bit cells, one per field of :class:`Header`, in order.
- The *bell table*: a row per bell (a loop or a thread of some process
  waiting here): ``BellRow``'s cells.
- The *holders*: the pids of the processes holding reservations, so that
  the living can give back what the dead held.
- The *ring*, from the first page boundary after those: records
  ``[length word][pickle, padded to 8]``; positions grow for ever.
"""

from __future__ import annotations

import os
import struct
import tempfile
from typing import NamedTuple

from .._contract import check_maxsize

MAGIC = 0x65747568_63000003  # "chute", layout 3
VERSION = 3  # 3: two locks, the head's and the tail's; the header regrouped by writer

# The queue's state (the header's ``state`` cell).
OPEN, SHUTDOWN, IMMEDIATE = 0, 1, 2


class Header(NamedTuple):
    """The header's cells in order: a snapshot of them (``Header.read``), and
    through the ``H_*`` constants below, the index of each cell.

    Grouped by who writes them, a 64-byte cache line each: what rarely
    changes; what a get writes (under the head lock); what a put writes
    (under the tail lock); the waiters and the reservations. A get and a put
    run at once on two CPUs, and each line then moves between them only
    when the other side reads it.
    """

    magic: int
    version: int
    capacity: int  # the ring's size in bytes
    maxsize: int
    state: int  # OPEN, SHUTDOWN or IMMEDIATE
    max_deliveries: int  # 0: no limit
    rows: int  # bell rows ever used: rings scan only these
    repair_due: int  # a lock was taken over from the dead: repair before use
    # -- written by gets (the head lock) --
    head: int  # ring positions: they grow for ever (mod capacity: where)
    taken: int  # records ever taken from the ring; the size is added - taken
    total_got: int
    holder: int  # the pid holding the head lock (0: nobody, or not yet written)
    spare_12: int
    spare_13: int
    spare_14: int
    spare_15: int
    # -- written by puts (the tail lock) --
    tail: int  # stored before ``added``: a record up to it is complete
    added: int  # records ever added to the ring (puts and items given back)
    unfinished: int  # put and not yet done (join() waits on it)
    total_put: int
    peak: int
    tail_holder: int  # the pid holding the tail lock, as ``holder``
    spare_22: int
    spare_23: int
    # -- waiters and reservations (both locks) --
    get_waiters: int  # three cells in WaitKind's order: H_GET_WAITERS + kind
    put_waiters: int
    join_waiters: int
    batch_putters: int  # putters waiting to put more than one item
    in_flight: int  # reserved and not yet settled, delayed ones included
    dead: int  # dead letters kept
    delayed: int  # nacked with a delay, not yet back

    @classmethod
    def read(cls, cells: memoryview) -> Header:
        return cls._make(cells[: len(cls._fields)].tolist())

    @property
    def size(self) -> int:
        return self.added - self.taken


(
    H_MAGIC,
    H_VERSION,
    H_CAPACITY,
    H_MAXSIZE,
    H_STATE,
    H_MAX_DELIVERIES,
    H_ROWS,
    H_REPAIR_DUE,
    H_HEAD,
    H_TAKEN,
    H_TOTAL_GOT,
    H_HOLDER,
    _,
    _,
    _,
    _,
    H_TAIL,
    H_ADDED,
    H_UNFINISHED,
    H_TOTAL_PUT,
    H_PEAK,
    H_TAIL_HOLDER,
    _,
    _,
    H_GET_WAITERS,
    H_PUT_WAITERS,
    H_JOIN_WAITERS,
    H_BATCH_PUTTERS,
    H_IN_FLIGHT,
    H_DEAD,
    H_DELAYED,
) = range(len(Header._fields))
HEADER_CELLS = 32  # room to grow


class BellRow(NamedTuple):
    """A row of the bell table, cell by cell (the B_* constants below)."""

    pid: int  # 0: a free row
    bell: int  # the bell's number: its pipe is ``{base}.{pid}.{bell}.bell``
    get: int  # waiters registered, three cells in WaitKind's order
    put: int
    join: int
    get_epoch: int  # bumped by each ring that consumes the registrations
    put_epoch: int
    join_epoch: int
    batch: int  # how many of the row's putters wait to put more than one item


B_PID = BellRow._fields.index("pid")
B_BELL = BellRow._fields.index("bell")
B_WAITING = BellRow._fields.index("get")
B_EPOCH = BellRow._fields.index("get_epoch")
B_BATCH = BellRow._fields.index("batch")
# A kind's cells: ``B_WAITING + kind``, ``B_EPOCH + kind``, ``H_GET_WAITERS + kind``.
BELL_CELLS = len(BellRow._fields)
MAX_BELLS = 256
HOLDERS_AT = HEADER_CELLS + MAX_BELLS * BELL_CELLS
MAX_HOLDERS = 256
# The ring starts on the first page boundary after the header and the tables.
RING_OFFSET = -(-(HOLDERS_AT + MAX_HOLDERS) * 8 // 4096) * 4096

# A record's length word: the pickle's length, and in the high bits how many
# times the item has been handed out by reserve(). A negative word is no
# record: WRAP (go on at the ring's start), or a gap to step over, -(bytes) - 1,
# left where an item given back to the front could not end right at the head.
WRAP = -1
LEN_BITS = 40
LEN_MASK = (1 << LEN_BITS) - 1
# A flag beside the delivery count (in a record's length word and a held
# entry): the payload is an envelope that carries the item's last error (see
# held.py). Only given-back items have it: a plain put's record never does.
CARRIES = 1 << 21
DELIVERIES = CARRIES - 1
# Pickles the fast paths write and read without calling the pickler: a
# record is always a pickle, these are just two that are cheap to spell.
# - An int in int32's range: PROTO 2, BININT and its 4 bytes, STOP; eight
#   bytes, so one payload cell: INT_PICKLE | (value & 0xFFFFFFFF) << 24.
# - A bytes of up to 4 GiB: PROTO 3, BINBYTES and its 4-byte length, the
#   bytes, STOP; its first cell (with the bytes' first one over its last
#   byte) is BYTES_PICKLE | length << 24, its length 8 + the bytes'.
INT_PICKLE = 0x2E00_0000_004A_0280  # b"\x80\x02J", four value bytes, b"."
INT_MASK = 0xFF00_0000_00FF_FFFF  # the cell's bytes that are no value
BYTES_PICKLE = 0x42_0380  # b"\x80\x03B"
STOP = 0x2E  # b"."
# A dead letter's payload: died_at, the length of a JSON of why, that JSON,
# then the item's pickle.
DEAD_HEAD = struct.Struct("<dQ")
MAX_MAXSIZE = (1 << 63) - 1  # a header cell is an int64


def stored(h: memoryview) -> int:
    """The items in the ring now, exact without a lock: the size when
    ``added`` was read, ``taken`` the same before and after it."""
    while True:
        taken = h[H_TAKEN]
        added = h[H_ADDED]
        if h[H_TAKEN] == taken:
            return added - taken


def pad(n: int) -> int:
    """``n`` bytes rounded up to a whole 8-byte cell."""
    return (n + 7) & ~7


def shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def check_shared_maxsize(maxsize: object) -> int:
    value = check_maxsize(maxsize)
    if value > MAX_MAXSIZE:
        raise ValueError(
            f"a ProcessQueue's maxsize must be at most 2**63 - 1 (a shared 64-bit cell), "
            f"not {value}; 0 means unbounded"
        )
    return value
