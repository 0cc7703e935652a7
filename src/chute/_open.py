"""``chute.open(url, name)``: a queue by URL, the transport chosen by its scheme.

Transports are imported only when a URL asks for them, so that an optional
dependency (a Redis client, say) is needed only by those who use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit

from ._exceptions import ChuteError

SCHEMES = ("sqlite", "redis", "rediss", "memory")


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


def open(url: str, name: str = "default", maxsize: int = 0, **options: Any) -> Opening:
    """Open the queue ``name`` at ``url``, creating it if need be.

    - ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: a
      durable queue in a SQLite file (options: ``codec``,
      ``visibility_timeout``, ``max_deliveries``, ``durability``);
    - ``redis://[:password@]host:port/db`` or ``rediss://`` (TLS): a queue on
      a Redis stream, shared by every client of the server (options:
      ``codec``, ``visibility_timeout``, ``max_deliveries``, ``connect_timeout``);
    - ``memory://``: an in-process ``chute.Queue`` (option: ``max_deliveries``).

    A URL that is not understood raises ``ValueError`` here, at the call.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if not isinstance(name, str) or not name:
        raise ValueError("a queue name must be a non-empty string")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc:
            raise ValueError(
                f"{url!r}: a sqlite URL has no host; write sqlite:///relative.db "
                "or sqlite:////absolute/path.db"
            )
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path or path.endswith("/"):
            raise ValueError(f"{url!r}: no file name (sqlite:///path/to/file.db)")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r}: options go in keyword arguments, not in the URL")
        from ._sqlite import SqliteQueue

        return Opening(SqliteQueue, (path, name, maxsize), options)
    if scheme in ("redis", "rediss"):
        parse_redis_url(url)  # a wrong URL fails here, at the call
        from ._redis import RedisQueue

        return Opening(RedisQueue, (url, name, maxsize), options)
    if scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: a memory URL is just 'memory://'")
        from ._memory import Queue

        return Opening(Queue, (maxsize,), options)
    if not scheme:
        raise ValueError(f"{url!r} is not a URL: it needs a scheme ({', '.join(SCHEMES)})")
    raise ValueError(
        f"{url!r}: unknown scheme {scheme!r}; chute opens {', '.join(s + '://' for s in SCHEMES)}"
    )


__all__ = ["ChuteError", "Opening", "open", "parse_redis_url"]
