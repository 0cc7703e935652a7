"""Dead letters: the items given up on, with why, in an arena every process shares.

An item dies after ``max_deliveries`` failed reservations, when it is given
back after ``shutdown(immediate=True)``, or when this process cannot unpickle
it (decode-and-bury: the others taken with it go back to the front).
"""

from __future__ import annotations

import contextlib
import json
import pickle
import time
from typing import Any, TypeVar

from .._contract import DeadLetter, ErrorInfo
from .._exceptions import ChuteError, QueueShutDown
from .._waiters import GET
from .arena import Arena
from .envelope import unwrap
from .layout import (
    CARRIES,
    DEAD_HEAD,
    DELIVERIES,
    H_DEAD,
    H_MAX_DELIVERIES,
    H_STATE,
    H_UNFINISHED,
    IMMEDIATE,
    OPEN,
    stored,
)
from .lock import Lock

__all__ = ["DeadLetters", "dead_parts", "dead_record"]

T = TypeVar("T")


class DeadLetters(Lock[T]):
    """The dead-letter arena (lock held unless said otherwise), and decode-and-bury."""

    def _goes_dead(self, deliveries: int) -> bool:
        """A failed item goes to the dead letters after max_deliveries tries, or
        when the queue was shut down immediately (it has nowhere to go back to)."""
        maxd = self._h[H_MAX_DELIVERIES]
        return self._h[H_STATE] == IMMEDIATE or bool(maxd and deliveries & DELIVERIES >= maxd)

    def _dead_arena(self) -> Arena:
        arena = self._dead
        if arena is None:
            path = f"{self._base}.dead"
            try:
                arena = Arena.open(path)
            except FileNotFoundError:
                arena = Arena.create(path, max(self._capacity, 1 << 20), exclusive=True)
            self._dead = arena
            self._resources.files.append(arena)
        return arena

    def _dead_letter(
        self, data: bytes, deliveries: int, reason: str, error: ErrorInfo | None = None
    ) -> None:
        """Lock held: keep ``data`` in the dead letters with why it died (the
        error given, else the one it carries from an earlier failure)."""
        if deliveries & CARRIES:
            with contextlib.suppress(Exception):
                data, carried = unwrap(data)
                error = error or carried
        why = json.dumps({"reason": reason, "error": error.to_dict() if error else None})
        meta = why.encode()
        record = DEAD_HEAD.pack(time.time(), len(meta)) + meta + data
        try:
            self._dead_arena().hold(record, deliveries & DELIVERIES)
        except ChuteError:
            raise ChuteError(
                f"the dead letters are full ({self._h[H_DEAD]} items); "
                "purge_dead() or requeue_dead() them first"
            ) from None
        self._h[H_DEAD] += 1

    def dead_letters(self) -> list[DeadLetter[T]]:
        """The items given up on, with why (the last error, deliveries, when,
        ``reason``), oldest first. An item that cannot be unpickled in this
        process is given as its pickle's ``bytes``."""
        with self._locked():
            if not self._h[H_DEAD]:
                return []
            held = self._dead_arena().held()
        return [dead_record(payload, d) for _offset, payload, d in held]

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
        return [dead_record(payload, d) for _offset, payload, d in held]

    def requeue_dead(self) -> int:
        """Put the dead letters back into the queue (as many as fit); how many."""
        with self._locked():
            if self._h[H_STATE] != OPEN:
                raise QueueShutDown("cannot requeue into a shut down queue")
            if not self._h[H_DEAD]:
                return 0
            arena = self._dead_arena()
            moved = 0
            if stored(self._h) == 0:
                self._restart_empty()  # (a get, holding the head lock alone, does not)
            for offset, payload, _d in arena.held():
                data = dead_parts(payload)[2]
                if not self._room([data]):
                    break
                self._write([data])
                arena.settle(offset)
                self._h[H_DEAD] -= 1
                moved += 1
            self._pending_rings.extend(self._to_ring(GET, moved))
        return moved

    def _decode(self, records: list[bytes]) -> list[Any]:
        """Unpickle what a get took. If one cannot be unpickled here, nothing
        is lost: it goes to the dead letters, the others back to the front,
        and the caller gets a ChuteError saying so."""
        try:
            return [pickle.loads(r) for r in records]
        except Exception as exc:
            bad = next(i for i, r in enumerate(records) if not loads_ok(r))
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
                self._pending_rings.extend(self._to_ring(GET, len(rest)))
            raise ChuteError(
                f"an item could not be unpickled in this process ({exc!r}); it was moved "
                "to the dead letters, and the other items taken with it went back"
            ) from exc


def dead_parts(payload: bytes) -> tuple[float, dict[str, Any], bytes]:
    """A dead letter's payload: (died_at, why, the item's pickle)."""
    died_at, n = DEAD_HEAD.unpack_from(payload)
    start = DEAD_HEAD.size
    why = json.loads(bytes(payload[start : start + n]))
    return died_at, why, payload[start + n :]


def dead_record(payload: bytes, deliveries: int) -> DeadLetter[Any]:
    died_at, why, data = dead_parts(payload)
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


def loads_ok(data: bytes) -> bool:
    try:
        pickle.loads(data)
    except Exception:
        return False
    return True
