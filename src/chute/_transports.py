"""The transports chute ships, as ``chute.open`` finds them by scheme.

Each is a small object with ``parse_url``, ``open`` and ``queue_names``
(the ``Transport`` Protocol of ``_open``); the queue's module is imported
only when a URL of its scheme is opened, so an optional client library is
needed only by those who use it. A package of another transport exposes
an object of the same shape in the ``chute.transports`` entry-point group.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ._open import parse_redis_url

__all__ = ["postgres", "redis", "sqlite"]


class SqliteTransport:
    """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""

    def parse_url(self, url: str) -> str:
        parts = urlsplit(url)
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
        return path

    def open(
        self, where: str, name: str, maxsize: int | None, *, create: bool, **options: Any
    ) -> Any:
        from ._backends.sqlite import SqliteQueue

        return SqliteQueue(where, name, maxsize, create=create, **options)

    def queue_names(self, where: str, **options: Any) -> list[str]:
        from ._backends.sqlite import SqliteQueue

        return SqliteQueue.queue_names(where, **options)


class RedisTransport:
    """``redis://[user:password@]host:port/db``, or ``rediss://`` for TLS."""

    def parse_url(self, url: str) -> str:
        parse_redis_url(url)  # a wrong URL fails here, at the call
        return url

    def open(
        self, where: str, name: str, maxsize: int | None, *, create: bool, **options: Any
    ) -> Any:
        from ._backends.redis import RedisQueue

        return RedisQueue(where, name, maxsize, create=create, **options)

    def queue_names(self, where: str, **options: Any) -> list[str]:
        from ._backends.redis import RedisQueue

        return RedisQueue.queue_names(where, **options)


class PostgresTransport:
    """``postgresql://[user[:password]@]host[:port]/database`` (or ``postgres://``)."""

    def parse_url(self, url: str) -> str:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host (postgresql://user@host:port/database)")
        try:
            parts.port  # noqa: B018 - checked for its ValueError
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number from 1 to 65535") from None
        if not parts.path.strip("/"):
            raise ValueError(f"{url!r}: no database (postgresql://user@host:port/database)")
        if parts.fragment:
            raise ValueError(f"{url!r}: a URL fragment means nothing here")
        return url

    def open(
        self, where: str, name: str, maxsize: int | None, *, create: bool, **options: Any
    ) -> Any:
        from ._backends.postgres import PostgresQueue

        return PostgresQueue(where, name, maxsize, create=create, **options)

    def queue_names(self, where: str, **options: Any) -> list[str]:
        from ._backends.postgres import PostgresQueue

        return PostgresQueue.queue_names(where, **options)


sqlite = SqliteTransport()
postgres = PostgresTransport()
redis = RedisTransport()
