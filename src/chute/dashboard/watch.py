"""What the dashboard shows, read from the store once a second.

Every number comes from the store (the queues' ``astatistics()``), never
from what this process saw happen: a restarted dashboard shows the same
queues, and one dashboard shows what every client did. The last minutes
are kept here only for the small charts (depth, and items handed out per
second), which start empty when the dashboard starts.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import ChuteError, QueueNotFound
from .._open import open as open_queue
from .._open import queue_names

__all__ = ["QueueView", "Watcher"]

logger = logging.getLogger("chute.dashboard")

#: Seconds between looks at the store.
EVERY = 1.0
#: Looks kept for the charts (five minutes).
HISTORY = 300
#: Seconds between listings of the queues (new ones appear, gone ones go).
LIST_EVERY = 5.0


@dataclass
class QueueView:
    """One queue as last read: its numbers and its recent history."""

    name: str
    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    dead: int = 0
    maxsize: int = 0
    oldest_age: float | None = None
    total_put: int = 0
    total_got: int = 0
    #: Items handed out per second over the last look.
    rate: float = 0.0
    depth_history: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY)
    )
    rate_history: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY)
    )
    #: Why the last look failed, or None.
    error: str | None = None
    _last: tuple[float, int] | None = None

    def update(self, s: Any, now: float) -> None:
        """Take a look's statistics ``s``, read at ``now`` (monotonic)."""
        self.set_numbers(s)
        if self._last is not None:
            then, got = self._last
            if now > then:
                self.rate = max(0.0, (s.total_got - got) / (now - then))
        self._last = (now, s.total_got)
        self.depth_history.append(self.ready)
        self.rate_history.append(round(self.rate, 1))
        self.error = None

    def set_numbers(self, s: Any) -> None:
        """The numbers of statistics ``s`` (the history is left as it is)."""
        self.ready = s.size - s.scheduled
        self.delayed = s.scheduled + s.delayed
        self.in_flight = s.in_flight - s.delayed
        self.dead = s.dead_lettered
        self.maxsize = s.maxsize
        self.oldest_age = getattr(s, "oldest_ready_age", None)
        self.total_put = s.total_put
        self.total_got = s.total_got

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ready": self.ready,
            "delayed": self.delayed,
            "in_flight": self.in_flight,
            "dead": self.dead,
            "maxsize": self.maxsize,
            "oldest_age": self.oldest_age,
            "total_put": self.total_put,
            "total_got": self.total_got,
            "rate": round(self.rate, 1),
            "depth_history": list(self.depth_history),
            "rate_history": list(self.rate_history),
            "error": self.error,
        }


class Watcher:
    """Keeps the queues at ``url`` open and their views current."""

    def __init__(self, url: str, *, codec: str = "json", every: float = EVERY) -> None:
        self.url = url
        self.codec = codec
        self.every = every
        self.views: dict[str, QueueView] = {}
        self.queues: dict[str, Any] = {}
        #: Why the store could not be listed or read at the last look, or None.
        self.error: str | None = None
        self.looks = 0
        self._listed_at = -LIST_EVERY
        self._changed = asyncio.Condition()
        # One look at a time (the loop's, and one a change asks for): two
        # would open the same queue twice.
        self._looking = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.look()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for q in self.queues.values():
            await _close(q)
        self.queues.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.look()

    async def look(self) -> None:
        """Read every queue once (and list them again now and then)."""
        async with self._looking:
            await self._look()

    async def _look(self) -> None:
        now = time.monotonic()
        try:
            if now - self._listed_at >= LIST_EVERY or self.error is not None:
                await self._list()
                self._listed_at = now
            failures = []
            for name, view in list(self.views.items()):
                try:
                    q = await self.queue(name)
                    view.update(await q.astatistics(), time.monotonic())
                except QueueNotFound:
                    await self._forget(name)
                except Exception as exc:  # the store is away: say so, look again
                    view.error = _say(exc)
                    failures.append(view.error)
                    await self._forget_queue(name)
            self.error = failures[0] if failures and len(failures) == len(self.views) else None
        except Exception as exc:
            self.error = _say(exc)
            for view in self.views.values():
                view.error = self.error
        if self.error is not None:
            logger.warning("cannot read %s: %s", self.url, self.error)
        self.looks += 1
        async with self._changed:
            self._changed.notify_all()

    async def changed(self, after: int, timeout: float) -> int:
        """Wait until a look after look number ``after``; the number now."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.looks > after), timeout)
            except TimeoutError:
                pass
        return self.looks

    async def queue(self, name: str) -> Any:
        """The open queue ``name`` (opened on first use; never created)."""
        q = self.queues.get(name)
        if q is None or q.closed:
            q = await open_queue(self.url, name, create=False, codec=self.codec)
            other = self.queues.get(name)
            if other is not None and not other.closed:  # opened meanwhile (a page, a look)
                await _close(q)
                return other
            self.queues[name] = q
        return q

    async def relist(self) -> None:
        """List the queues now (a page asked for one made since)."""
        async with self._looking:
            await self._list()
            self._listed_at = time.monotonic()

    async def _list(self) -> None:
        names = await asyncio.to_thread(queue_names, self.url)
        for name in names:
            self.views.setdefault(name, QueueView(name))
        for name in [n for n in self.views if n not in names]:
            await self._forget(name)
        self.views = dict(sorted(self.views.items()))

    async def _forget(self, name: str) -> None:
        self.views.pop(name, None)
        await self._forget_queue(name)

    async def _forget_queue(self, name: str) -> None:
        q = self.queues.pop(name, None)
        if q is not None:
            await _close(q)

    def snapshot(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "queues": [v.as_json() for v in self.views.values()],
            "at": time.time(),
        }


async def _close(q: Any) -> None:
    try:
        await q.aclose()
    except Exception as exc:  # closing a queue whose store is gone
        logger.debug("closing %r: %s", q, exc)


def _say(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ChuteError) else f"{type(exc).__name__}: {text}"
