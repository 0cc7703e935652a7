"""How ``Workers`` report handler failures without flooding the log.

A handler's exception is logged at ERROR with its traceback the first time
each kind of failure is seen (its type and the lines it was raised
through; the message is left out, as it often names the item); the same
kind again is only counted, and the count logged as one line at most every
``REPEAT_EVERY`` seconds and when the pool stops.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import reprlib
import time
import traceback
from collections.abc import Callable
from typing import Any

#: A failure of a kind already logged is counted, and the count logged at
#: most this often (seconds).
REPEAT_EVERY = 10.0
#: Kinds of failure remembered (the least recently seen is forgotten first).
KINDS_KEPT = 256

logger = logging.getLogger("chute.workers")
_clock = time.monotonic  # the failure log's clock (tests move it)
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80


def _where(exc: BaseException) -> list[traceback.FrameSummary]:
    """The frames ``exc`` was raised through (those of a worker process,
    for a handler that failed in one)."""
    frames: list[traceback.FrameSummary] | None = getattr(exc, "_chute_frames", None)
    return frames if frames is not None else traceback.extract_tb(exc.__traceback__)


class _Kind:
    """One kind of failure: how often it came back since it was last logged."""

    __slots__ = ("label", "last", "logged_at", "logged_wall", "repeats")

    def __init__(self, label: str, now: float) -> None:
        self.label = label
        self.logged_at = now
        self.logged_wall = time.time()
        self.repeats = 0
        self.last = ""


class _FailureLog:
    """Logs exceptions without flooding.

    A failure's kind is its exception type and the lines it was raised
    through (file and line of every frame): the same bug hit by a thousand
    items is one kind, whatever their messages say (messages often carry the
    item, and would defeat the bound); the same exception raised at another
    place is another kind. The first of a kind is logged in full, with its
    traceback; the next ones of that kind are counted, and the count is
    logged (one line, the last message in it) once ``REPEAT_EVERY`` seconds
    have passed since the kind was last logged, and by ``flush()``.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._kinds: collections.OrderedDict[tuple[object, ...], _Kind] = collections.OrderedDict()

    def failed(self, level: int, exc: BaseException, msg: str, *args: object) -> None:
        if not self._log.isEnabledFor(level):
            return
        frames = _where(exc)
        name = type(exc).__qualname__
        key = (level, name, *((f.filename, f.lineno) for f in frames))
        now = _clock()
        kind = self._kinds.get(key)
        if kind is None:
            if len(self._kinds) >= KINDS_KEPT:
                self._summarise(level, self._kinds.popitem(last=False)[1])
            at = frames[-1] if frames else None
            where = f" at {os.path.basename(at.filename)}:{at.lineno} in {at.name}" if at else ""
            self._kinds[key] = _Kind(f"{name}{where}", now)
            self._log.log(level, msg, *args, exc_info=exc)
            return
        self._kinds.move_to_end(key)
        kind.repeats += 1
        kind.last = _message(exc)
        if now - kind.logged_at >= REPEAT_EVERY:
            self._summarise(level, kind)
            kind.logged_at, kind.logged_wall = now, time.time()

    def flush(self) -> None:
        """Log the counts not logged yet."""
        for (level, *_), kind in self._kinds.items():
            assert isinstance(level, int)
            self._summarise(level, kind)

    def _summarise(self, level: int, kind: _Kind) -> None:
        if kind.repeats:
            self._log.log(
                level,
                "... and %s more %s since %s (the last: %s)",
                f"{kind.repeats:,}",
                kind.label,
                time.strftime("%H:%M:%S", time.localtime(kind.logged_wall)),
                kind.last,
            )
            kind.repeats = 0


def _message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _name_of(fn: Callable[..., Any]) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{name}" if module else name
