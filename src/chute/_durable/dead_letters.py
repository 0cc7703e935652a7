"""The dead-letter calls of a durable queue: a page of them, purging and
requeueing them (all, or chosen by id), each in an async form too.

:class:`DeadLetterMixin` is a base of ``DurableQueue`` (``queue.py``), kept
apart so that the queue's module holds its waits and this one what an
operator does with the items that died. Each call is one backend call;
checking the arguments (a page, ids) happens here, before the store is
touched, and what the backend answers is decoded as the queue's codec says.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from .._codecs import Codec
from .._contract import DeadLetter
from .backend import Backend, Call, DeadRecord

__all__ = ["DeadLetterMixin"]

T = TypeVar("T")
R = TypeVar("R")


class DeadLetterMixin(Generic[T]):
    """``dead_letters``, ``purge_dead``, ``requeue_dead`` and their async
    forms, for a queue that has a ``Backend`` and a codec."""

    _backend: Backend
    _codec: Codec

    if TYPE_CHECKING:
        # Declared for the type checker only: ``DurableQueue`` defines it,
        # and comes first in the order of bases (a body here would never run).
        def _check_open(self) -> None: ...

    def dead_letters(
        self, limit: int | None = None, offset: int = 0, *, newest_first: bool = False
    ) -> list[DeadLetter[T]]:
        """The dead letters, oldest first (``newest_first``: the other way),
        each with why it died and its ``id``; they stay. A page: ``offset``
        skipped, then at most ``limit`` (None: all of them). The total is
        ``statistics().dead_lettered``."""
        return [self._dead_letter(r) for r in self._run(self._listing(limit, offset, newest_first))]

    async def adead_letters(
        self, limit: int | None = None, offset: int = 0, *, newest_first: bool = False
    ) -> list[DeadLetter[T]]:
        """``dead_letters()`` without blocking the loop."""
        records = await self._arun(self._listing(limit, offset, newest_first))
        return [self._dead_letter(r) for r in records]

    def purge_dead(self, ids: Iterable[str] | None = None) -> list[DeadLetter[T]]:
        """Remove the dead letters and return them, oldest first. With ``ids``
        (``DeadLetter.id``), only those, at once; an id no longer there is
        passed over (the list says what was removed). ``ValueError`` for an
        id this store could not have made, and nothing removed."""
        self._check_open()
        records = self._run(self._backend.purge_dead(_dead_ids(ids)))
        return [self._dead_letter(r) for r in records]

    async def apurge_dead(self, ids: Iterable[str] | None = None) -> list[DeadLetter[T]]:
        """``purge_dead()`` without blocking the loop."""
        self._check_open()
        records = await self._arun(self._backend.purge_dead(_dead_ids(ids)))
        return [self._dead_letter(r) for r in records]

    def requeue_dead(self, ids: Iterable[str] | None = None) -> int:
        """Put the dead letters back at the end of the queue, in the order they
        died, to be tried afresh; how many. With ``ids``, only those, at
        once (an id no longer there is passed over). ``QueueShutDown`` if
        the queue is shut down, and ``ValueError`` for an id this store
        could not have made: nothing moved."""
        self._check_open()
        return self._run(self._backend.requeue_dead(_dead_ids(ids)))

    async def arequeue_dead(self, ids: Iterable[str] | None = None) -> int:
        """``requeue_dead()`` without blocking the loop."""
        self._check_open()
        return await self._arun(self._backend.requeue_dead(_dead_ids(ids)))

    def _listing(
        self, limit: object, offset: object, newest_first: object
    ) -> Call[list[DeadRecord]]:
        limit, offset = _page(limit, offset)
        self._check_open()
        return self._backend.dead_letters(
            limit=limit, offset=offset, newest_first=bool(newest_first)
        )

    async def _arun(self, call: Call[R]) -> R:
        return await self._backend.run(call)

    def _run(self, call: Call[R]) -> R:
        return self._backend.run_sync(call)

    def _dead_letter(self, record: DeadRecord) -> DeadLetter[T]:
        info = record.error
        try:
            item = self._codec.decode(record.data)
        except Exception:
            # Handed back as stored rather than hidden: often why it died.
            item = record.data
        return DeadLetter(
            item=item,
            deliveries=record.deliveries,
            died_at=record.died_at,
            reason=record.reason,
            error_type=None if info is None else info.type,
            error=None if info is None else info.message,
            traceback=None if info is None else info.traceback,
            id=record.id,
        )


def _page(limit: object, offset: object) -> tuple[int | None, int]:
    """A page of dead letters asked for, checked: ``limit`` None or an int
    >= 0, ``offset`` an int >= 0 (either beyond any store's count is cut to
    one that every store takes, and means the same)."""
    checked = None if limit is None else _at_least_0(limit, "limit", " or None")
    return checked, _at_least_0(offset, "offset", "")


def _at_least_0(value: object, what: str, or_none: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int{or_none}, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, not {value}")
    return min(value, 2**62)


def _dead_ids(ids: Iterable[str] | None) -> list[str] | None:
    """``ids`` as a list without repeats (None: every dead letter). Whether
    each is one the store could have made, its backend checks."""
    if ids is None:
        return None
    if isinstance(ids, str | bytes):
        raise TypeError(
            "ids must be an iterable of dead letter ids (DeadLetter.id), not one string"
        )
    out = list(dict.fromkeys(ids))
    for id_ in out:
        if not isinstance(id_, str):
            raise TypeError(f"a dead letter id is a str (DeadLetter.id), not {type(id_).__name__}")
    return out
