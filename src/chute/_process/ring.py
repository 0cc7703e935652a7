"""The ring: records ``[length word][pickle]`` in the shared file, locks held.

Positions grow for ever (``% capacity`` says where). A record is published
by one aligned 8-byte store of the tail (or the head, for an item given
back in front) after its bytes are written, then counted in ``added``, so a
process killed while writing leaves nothing half-visible; ``_recount``
rebuilds the count from what is published. The size is ``added - taken``:
a put adds under the tail lock, a get takes under the head lock (lock.py).
Every method here runs with both locks held.
"""

from __future__ import annotations

from typing import TypeVar

from .handle import ProcessHandle
from .layout import (
    H_ADDED,
    H_HEAD,
    H_MAXSIZE,
    H_PEAK,
    H_TAIL,
    H_TAKEN,
    H_TOTAL_GOT,
    H_TOTAL_PUT,
    H_UNFINISHED,
    LEN_BITS,
    LEN_MASK,
    RING_OFFSET,
    WRAP,
    pad,
    stored,
)

__all__ = ["Ring"]

T = TypeVar("T")


class Ring(ProcessHandle[T]):
    """Storing and taking records; the bound (maxsize) and the bytes."""

    def _room(self, records: list[bytes], *, bounded: bool = True) -> bool:
        """Whether ``records`` fit the ring (and maxsize, if ``bounded``)."""
        h = self._h
        maxsize = h[H_MAXSIZE]
        if bounded and maxsize and stored(h) + len(records) > maxsize:
            return False
        cap, tail = self._capacity, h[H_TAIL]
        total = sum([(len(data) + 15) & ~7 for data in records])  # 8 + padded each
        if tail % cap + total <= cap:  # no wrap on the way: the common case
            return tail - h[H_HEAD] + total <= cap
        need = 0
        for data in records:
            rec = 8 + pad(len(data))
            phys = (tail + need) % cap
            if cap - phys < rec:
                need += cap - phys
            need += rec
        return h[H_TAIL] - h[H_HEAD] + need <= cap

    def _write(self, records: list[bytes], *, deliveries: int = 0, new: bool = True) -> None:
        """Store ``records`` at the tail; ``new``: count them as put (not given back)."""
        h, lengths, mm, cap = self._h, self._ring_q, self._mm, self._capacity
        tail = h[H_TAIL]
        for data in records:
            n = len(data)
            rec = 8 + pad(n)
            phys = tail % cap
            if cap - phys < rec:
                lengths[phys >> 3] = WRAP
                tail += cap - phys
                phys = 0
            start = RING_OFFSET + phys + 8
            mm[start : start + n] = data
            lengths[phys >> 3] = n | (deliveries << LEN_BITS)
            tail += rec
        h[H_TAIL] = tail  # publish: the records become visible at once
        h[H_ADDED] += len(records)
        count = stored(h)
        if new:  # not for an item given back: it was counted when first put
            h[H_UNFINISHED] += len(records)
            h[H_TOTAL_PUT] += len(records)
        if count > h[H_PEAK]:
            h[H_PEAK] = count

    def _restart_empty(self) -> None:
        """Both locks held, ring empty (head == tail): restart at the ring's start,
        so that any record up to the whole capacity fits next time.

        Crash-safe in this order: a wrap marker first (so a walk from the
        old position skips to the boundary), then the tail, then the head.
        """
        h, cap = self._h, self._capacity
        tail = h[H_TAIL]
        phys = tail % cap
        if phys:
            self._ring_q[phys >> 3] = WRAP
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
                head += cap - phys if n == WRAP else -n - 1
                continue
            n &= LEN_MASK
            start = RING_OFFSET + phys + 8
            out.append(mm[start : start + n])
            head += 8 + pad(n)
        h[H_HEAD] = head
        h[H_TAKEN] += len(out)
        if stored(self._h) == 0:
            self._restart_empty()
        h[H_TOTAL_GOT] += len(out)
        return out

    def _give_back(self, data: bytes, deliveries: int) -> bool:
        """Put a reserved item back at the front (the end if it cannot go
        there). False if the ring has no room for it at all right now."""
        h, cap = self._h, self._capacity
        if stored(h) == 0:
            self._restart_empty()  # (a get, holding the head lock alone, does not)
        rec = 8 + pad(len(data))
        head, tail = h[H_HEAD], h[H_TAIL]
        if tail - head + rec > cap:
            return False
        # Contiguous, ending at the head; or, where that would cross the
        # ring's end (a record larger than the space before the head, as
        # one carrying its last error), ending at the ring's end with a gap
        # word over the start of the ring up to the head.
        gap = head % cap if rec > head % cap else 0
        front = head - gap - rec
        if stored(h) and tail - front <= cap:
            phys = front % cap
            start = RING_OFFSET + phys + 8
            self._mm[start : start + len(data)] = data
            self._ring_q[phys >> 3] = len(data) | (deliveries << LEN_BITS)
            if gap:
                self._ring_q[0] = -gap - 1
            h[H_HEAD] = front  # publish
            h[H_ADDED] += 1
        else:
            # Counted when it was put, as at the front: the bound does not
            # apply (a give-back that waited for room would stall its holder).
            if not self._room([data], bounded=False):
                return False
            self._write([data], deliveries=deliveries, new=False)
        return True

    def _recount(self) -> None:
        """Make the header agree with the ring after a holder died mid-update.

        Records up to the tail are complete (the tail is stored last); the
        count is recomputed from them.
        """
        h, cap = self._h, self._capacity
        pos, tail, count = h[H_HEAD], h[H_TAIL], 0
        while pos < tail:
            phys = pos % cap
            n = self._ring_q[phys >> 3]
            if n < 0:
                pos += cap - phys if n == WRAP else -n - 1
                continue
            n &= LEN_MASK
            if n < 0 or phys + 8 + n > cap or pos + 8 + pad(n) > tail:
                h[H_TAIL] = tail = pos  # cannot happen with whole stores; be safe
                break
            pos += 8 + pad(n)
            count += 1
        h[H_ADDED] = h[H_TAKEN] + count
        if h[H_UNFINISHED] < count:
            h[H_UNFINISHED] = count
