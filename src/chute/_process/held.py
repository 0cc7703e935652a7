"""Reservations: an item reserved is kept in a file of this process's until settled.

A reserved item is copied to this handle's arena before it leaves the ring,
and the process is listed among the *holders*; whoever finds a holder dead
gives back what it held (with its delivery count), to the front of the
queue or to the dead letters. Every method here runs with the lock held.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from typing import NamedTuple, TypeVar

from .._contract import ErrorInfo, Outcome
from .._exceptions import ChuteError, JobSettledError, QueueShutDown
from .._waiters import GET, JOIN, PUT
from .arena import DELAYED, Arena
from .bells import file_numbers
from .dead import DeadLetters
from .envelope import wrap
from .handle import alive
from .layout import (
    H_DELAYED,
    H_HEAD,
    H_IN_FLIGHT,
    H_STATE,
    H_UNFINISHED,
    IMMEDIATE,
    LEN_BITS,
    LEN_MASK,
    MAX_HOLDERS,
    RING_OFFSET,
    WRAP,
    stored,
)

__all__ = ["RECOVERY_INTERVAL", "Held", "NoRoom", "Reserved"]

T = TypeVar("T")

RECOVERY_INTERVAL = 0.1  # seconds between looks for dead holders when idle


class NoRoom(Exception):
    """A given-back item finds no room in the ring yet."""


class Reserved(NamedTuple):
    """What a reservation took: where it is held, its pickle, its delivery
    count (with the ``CARRIES`` flag where it carries its last error)."""

    offset: int
    data: bytes
    deliveries: int


class Held(DeadLetters[T]):
    """Taking items on reservation, settling them, and giving back what the dead held."""

    def _own_arena(self) -> Arena:
        arena = self._arena
        if arena is None:
            arena = self._arena = Arena.create(
                f"{self._base}.{self._pid}.{next(file_numbers)}.held",
                max(self._capacity, 1 << 20),
            )
            self._resources.files.append(arena)
        return arena

    def _arena_paths(self, pid: int) -> list[str]:
        """The held-item files of ``pid``: one per handle it opened on the queue."""
        return glob.glob(glob.escape(f"{self._base}.{pid}.") + "*.held")

    def _try_reserve(self) -> tuple[Reserved, list[str]] | None:
        """Take the next item on reservation: (what was taken, bells to ring),
        or None if there is nothing yet."""
        h = self._h
        if stored(h) == 0 and h[H_IN_FLIGHT] and time.monotonic() > self._next_recovery:
            self._recover_dead_holders()
        state = h[H_STATE]
        if state == IMMEDIATE or (state and stored(h) == 0):
            raise QueueShutDown()
        if stored(h) == 0:
            return None
        cap, lengths = self._capacity, self._ring_q
        head = h[H_HEAD]
        phys = head % cap
        while (word := lengths[phys >> 3]) < 0:  # a wrap, or a gap to step over
            phys = 0 if word == WRAP else phys - word - 1
        # The delivery count, with the CARRIES flag riding along.
        n, deliveries = word & LEN_MASK, (word >> LEN_BITS) + 1
        start = RING_OFFSET + phys + 8
        data = self._mm[start : start + n]
        arena = self._own_arena()
        # Kept in this process's file first, then taken from the ring: a
        # crash between the two delivers the item twice, never zero times.
        offset = arena.hold(data, deliveries)
        self._register_holder()
        self._read(1)
        h[H_IN_FLIGHT] += 1
        return Reserved(offset, data, deliveries), self._to_ring(PUT, 1)

    def _register_holder(self) -> None:
        cells, pid = self._holders, self._pid
        free = -1
        for i in range(MAX_HOLDERS):
            if cells[i] == pid:
                return
            if free < 0 and cells[i] == 0:
                free = i
        if free < 0:
            self._recover_dead_holders()
            free = next((i for i in range(MAX_HOLDERS) if cells[i] == 0), -1)
            if free < 0:
                raise ChuteError(f"more than {MAX_HOLDERS} processes hold reservations")
        cells[free] = pid

    def _settle_held(
        self,
        offset: int,
        data: bytes,
        deliveries: int,
        *,
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
                data, deliveries = wrap(data, deliveries, error, self._capacity)
            if not self._give_back(data, deliveries):
                raise NoRoom
            wake = self._to_ring(GET, 1)
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
                wake = self._to_ring(JOIN)
        self._let_go(arena, offset)
        return wake, ("retried" if not ok and not dead else "dead" if dead else "acked")

    def _let_go(self, arena: Arena, offset: int) -> None:
        """Lock held: a held entry is settled (given back, dead, or done)."""
        if arena.state(offset) == DELAYED:
            self._h[H_DELAYED] -= 1
        arena.settle(offset)
        self._h[H_IN_FLIGHT] -= 1

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
                    self._pending_rings.extend(self._to_ring(JOIN))
            return True
        return self._give_back(data, deliveries)

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
            self._pending_rings.extend(self._to_ring(GET, given))
        if arena.live == 0:
            arena.remove()
            self._arena = None
            if not self._arena_paths(self._pid):  # no other handle of ours holds any
                self._forget_holder(self._pid)

    def _forget_holder(self, pid: int) -> None:
        cells = self._holders
        for i in range(MAX_HOLDERS):
            if cells[i] == pid:
                cells[i] = 0

    def _recover_dead_holders(self) -> None:
        """Lock held: give back every item held by a process that died."""
        self._next_recovery = time.monotonic() + RECOVERY_INTERVAL
        cells = self._holders
        dead = [cells[i] for i in range(MAX_HOLDERS) if cells[i] and not alive(cells[i])]
        for pid in dead:
            all_finished = True
            for path in self._arena_paths(pid):
                try:
                    arena = Arena.open(path)
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
            wake = self._to_ring(GET)
            if wake:
                self._pending_rings.extend(wake)
