"""``chute dashboard``: a web page over the queues at a URL (``pip install
'chute[dashboard]'``, on aiohttp).

- ``watch.py``: the numbers, read from the store once a second, and the
  last minutes of them for the charts;
- ``pages.py``: the HTML (made on the server, escaped) and its one script;
- ``app.py``: the routes, server-sent events, the token and the CSRF check.
"""

from __future__ import annotations

import ipaddress
import secrets

try:
    from .app import make_app
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError("chute dashboard needs aiohttp: pip install 'chute[dashboard]'") from exc

__all__ = ["is_loopback", "make_app", "new_token"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def new_token() -> str:
    """A token for a dashboard that listens beyond this machine."""
    return secrets.token_urlsafe(24)
