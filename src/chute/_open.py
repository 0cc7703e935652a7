"""``chute.open(url, name)``: a queue by URL, the transport chosen by its scheme.

Transports are imported only when a URL asks for them, so that an optional
dependency (a Redis client, say) is needed only by those who use it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Generator
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from ._exceptions import ChuteError

#: The transports chute ships: URL scheme -> "module:attribute" of a
#: ``Transport``, imported on first use. Other packages add schemes through
#: the entry-point group ``chute.transports`` (name: the scheme; value: the
#: transport object), with no change to chute; a built-in scheme wins.
BUILTIN_TRANSPORTS: dict[str, str] = {
    "sqlite": "chute._transports:sqlite",
    "redis": "chute._transports:redis",
    "rediss": "chute._transports:redis",
    "postgresql": "chute._transports:postgres",
    "postgres": "chute._transports:postgres",
}
ENTRY_POINT_GROUP = "chute.transports"


class Transport(Protocol):
    """What a URL scheme maps to: how to read its URLs, open a queue, and
    list the queues there. ``parse_url`` raises ``ValueError`` naming what
    is wrong, at the call; ``open`` and ``queue_names`` may block (they run
    off the event loop) and raise ``QueueNotFound`` for what is not there."""

    def parse_url(self, url: str) -> Any: ...

    def open(
        self, where: Any, name: str, maxsize: int | None, *, create: bool, **options: Any
    ) -> Any: ...

    def queue_names(self, where: Any, **options: Any) -> list[str]: ...


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def schemes() -> list[str]:
    """Every scheme ``chute.open`` understands here: the built-in ones,
    ``memory``, and those that installed packages add."""
    return sorted({*BUILTIN_TRANSPORTS, "memory", *_entry_points()})


def transport_for(scheme: str) -> Transport | None:
    """The transport of ``scheme``, imported now; ``None`` if none has it."""
    spec = BUILTIN_TRANSPORTS.get(scheme)
    if spec is not None:
        module, _, attr = spec.partition(":")
        found: Transport = getattr(importlib.import_module(module), attr)
        return found
    ep = _entry_points().get(scheme)
    if ep is None:
        return None
    loaded: Transport = ep.load()
    return loaded


class Opening:
    """What ``chute.open()`` returns: ``await`` it for the queue, or use it
    as ``async with chute.open(...) as q`` to close the queue afterwards
    (``with``, where no event loop runs)."""

    __slots__ = ("_args", "_factory", "_queue")

    def __init__(self, factory: Any, args: tuple[Any, ...], options: dict[str, Any]) -> None:
        self._factory = factory
        self._args = (args, options)
        self._queue: Any = None

    async def _open(self) -> Any:
        args, options = self._args
        # Opening a file (creating its tables) is I/O: off the event loop.
        return await asyncio.to_thread(self._factory, *args, **options)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._open().__await__()

    async def __aenter__(self) -> Any:
        self._queue = await self._open()
        return self._queue

    def __enter__(self) -> Any:
        """``with chute.open(...) as q`` where no event loop runs (a worker
        thread or process using ``q.sync``): opens here, closes on exit."""
        args, options = self._args
        self._queue = self._factory(*args, **options)
        return self._queue

    def __exit__(self, *exc: object) -> None:
        q = self._queue
        if q is not None:
            close = getattr(q, "close", None)
            if close is not None:
                close()

    async def __aexit__(self, *exc: object) -> None:
        q = self._queue
        if q is not None:
            aclose = getattr(q, "aclose", None)
            if aclose is not None:
                await aclose()


def without_password(url: str) -> str:
    """``url`` as it may be shown: a password in it becomes ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def parse_redis_url(url: str) -> dict[str, Any]:
    """Check a ``redis://`` or ``rediss://`` URL; ``ValueError`` naming the problem."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("redis", "rediss"):
        raise ValueError(f"{url!r}: not a redis:// or rediss:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host (redis://host:port/db)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"{url!r}: the database after the host must be a number, not {db!r}")
    if parts.fragment:
        raise ValueError(f"{url!r}: a URL fragment means nothing here")
    return {"host": parts.hostname, "port": port or 6379, "db": int(db)}


def _location(url: str) -> tuple[str, Any, Transport | None]:
    """Check ``url``: its scheme, what its transport opens (a file's path,
    the URL itself) and the transport (``None`` for ``memory://``);
    ``ValueError`` naming the problem."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: a memory URL is just 'memory://'")
        return "memory", "", None
    if not scheme:
        raise ValueError(f"{url!r} is not a URL: it needs a scheme ({', '.join(schemes())})")
    transport = transport_for(scheme)
    if transport is None:
        known = ", ".join(s + "://" for s in schemes())
        raise ValueError(f"{url!r}: unknown scheme {scheme!r}; chute opens {known}")
    return scheme, transport.parse_url(url), transport


check_url = _location


def open(
    url: str,
    name: str = "default",
    maxsize: int | None = None,
    *,
    create: bool = True,
    **options: Any,
) -> Opening:
    """Open the queue ``name`` at ``url``, creating it if need be.

    - ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: a
      durable queue in a SQLite file (options: ``codec``,
      ``visibility_timeout``, ``max_deliveries``, ``durability``);
    - ``redis://[:password@]host:port/db`` or ``rediss://`` (TLS): a queue on
      a Redis stream, shared by every client of the server (options:
      ``codec``, ``visibility_timeout``, ``max_deliveries``, ``connect_timeout``);
    - ``memory://``: an in-process ``chute.Queue`` (option: ``max_deliveries``).

    A stored queue's ``maxsize`` and ``max_deliveries`` belong to the queue:
    left out (or ``None`` for ``maxsize``), the stored ones hold (a new
    queue: unbounded, no limit); passed, they replace the stored ones for
    every client. ``create=False`` only opens a queue that exists, and
    raises ``QueueNotFound`` (creating nothing) where it does not.

    A URL that is not understood raises ``ValueError`` here, at the call.
    """
    _, where, transport = _location(url)
    if not isinstance(name, str) or not name:
        raise ValueError("a queue name must be a non-empty string")
    if transport is None:
        if not create:
            raise ValueError("a memory:// queue lives in the process that made it: create=False")
        from ._contract import UNSET
        from ._memory import Queue

        if options.get("max_deliveries") is UNSET:
            del options["max_deliveries"]
        return Opening(Queue, (0 if maxsize is None else maxsize,), options)
    return Opening(transport.open, (where, name, maxsize), {"create": create, **options})


def queue_names(url: str, **options: Any) -> list[str]:
    """The names of the queues stored at ``url``, sorted; nothing is created.

    ``QueueNotFound`` where a SQLite file does not exist. Blocking I/O: call
    it off the event loop (``asyncio.to_thread``).
    """
    _, where, transport = _location(url)
    if transport is None:
        raise ValueError("memory:// queues live in one process: there is nothing to list")
    return transport.queue_names(where, **options)


__all__ = [
    "BUILTIN_TRANSPORTS",
    "ENTRY_POINT_GROUP",
    "ChuteError",
    "Opening",
    "Transport",
    "check_url",
    "open",
    "parse_redis_url",
    "queue_names",
    "schemes",
    "transport_for",
]
