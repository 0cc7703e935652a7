"""The dashboard's web application (aiohttp): pages, live numbers by
server-sent events, and the POSTs that requeue or purge dead letters.

Who may do what:

- A token, when the dashboard has one (always when it listens beyond this
  machine), is asked of every request: ``?token=`` once (it is then kept
  in a cookie that only this site sends, ``SameSite=Strict``), or an
  ``Authorization: Bearer`` header. Missing: 401; wrong: 403.
- A change is a POST carrying ``X-Chute-CSRF``, a secret of this server's
  written into its pages. A page of another site can neither read that
  secret nor send a custom header without a CORS preflight, which this
  server never grants; an ``Origin`` other than this server's is refused
  too. Refused: 403, nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .._exceptions import ChuteError, QueueNotFound, QueueShutDown
from .._open import without_password
from .pages import index_page, message_page, queue_page
from .watch import Watcher

__all__ = ["PER_PAGE", "make_app"]

logger = logging.getLogger("chute.dashboard")

#: Dead letters on a page.
PER_PAGE = 50
#: Most ids one POST may name.
MAX_IDS = 10_000
COOKIE = "chute_dashboard_token"

WATCHER = web.AppKey("watcher", Watcher)
SECRETS: web.AppKey[dict[str, str | None]] = web.AppKey("secrets")
#: The event streams open now: ended when the server stops, which would
#: otherwise wait for every open page to go away.
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(
    url: str, *, token: str | None = None, codec: str = "json", every: float = 1.0
) -> web.Application:
    """The dashboard over the queues at ``url`` (started and stopped with
    the application: it opens the queues, and closes them)."""
    app = web.Application(middlewares=[_guard], client_max_size=1 << 20)
    app[WATCHER] = Watcher(url, codec=codec, every=every)
    app[SECRETS] = {"token": token, "csrf": secrets.token_urlsafe(32)}
    app[STREAMS] = set()
    app.router.add_get("/", index)
    app.router.add_get("/events", events)
    app.router.add_get("/api/queues", api_queues)
    app.router.add_get("/queues/{name}", queue)
    app.router.add_post("/queues/{name}/dead/{what:requeue|purge}", act)
    app.on_startup.append(_start)
    app.on_shutdown.append(_end_streams)
    app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    await app[WATCHER].start()


async def _end_streams(app: web.Application) -> None:
    streams = app[STREAMS]
    for task in [*streams]:
        task.cancel()


async def _stop(app: web.Application) -> None:
    await app[WATCHER].close()


def _where(request: web.Request) -> str:
    return without_password(request.app[WATCHER].url)


def _csrf(request: web.Request) -> str:
    return str(request.app[SECRETS]["csrf"])


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[SECRETS]["token"]
    if token is not None:
        given = request.query.get("token")
        if given is not None:
            if not _same(given, token):
                return _refuse(403, "Wrong token", "That token is not this dashboard's.")
            # Kept in a cookie, and taken out of the address bar (and history).
            query = {k: v for k, v in request.query.items() if k != "token"}
            answer = web.Response(
                status=303, headers={"Location": str(request.rel_url.with_query(query))}
            )
            answer.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            return answer
        sent = request.cookies.get(COOKIE)
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            sent = header[len("Bearer ") :]
        if sent is None:
            return _refuse(
                401,
                "Token needed",
                "This dashboard asks for its token: open the address chute dashboard printed "
                "(it ends in ?token=...).",
            )
        if not _same(sent, token):
            return _refuse(403, "Wrong token", "That token is not this dashboard's.")
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return _refuse(403, "Refused", "A change asked from another site is refused.")
        if not _same(request.headers.get("X-Chute-CSRF", ""), _csrf(request)):
            return _refuse(
                403, "Refused", "A change must come from this dashboard's own page (CSRF)."
            )
    response = await handler(request)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _refuse(status: int, title: str, text: str) -> web.Response:
    return web.Response(
        status=status, text=message_page(title, text), content_type="text/html", charset="utf-8"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def index(request: web.Request) -> web.Response:
    watcher = request.app[WATCHER]
    return _html(index_page(watcher.snapshot(), csrf=_csrf(request), where=_where(request)))


async def api_queues(request: web.Request) -> web.Response:
    return web.json_response(request.app[WATCHER].snapshot())


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the numbers after every look at the store."""
    watcher = request.app[WATCHER]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    me = asyncio.current_task()
    assert me is not None
    request.app[STREAMS].add(me)
    seen = -1
    try:
        while True:
            if seen >= 0:
                seen = await watcher.changed(seen, timeout=15)
            else:
                seen = watcher.looks
            data = json.dumps(watcher.snapshot())
            await response.write(f"retry: 2000\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the page went away (or the server stops)
    finally:
        request.app[STREAMS].discard(me)
    return response


async def queue(request: web.Request) -> web.Response:
    watcher = request.app[WATCHER]
    name = request.match_info["name"]
    view = watcher.views.get(name)
    if view is None:
        with contextlib.suppress(Exception):  # made since the last listing?
            await watcher.relist()
        view = watcher.views.get(name)
    if view is None:
        return _html(
            message_page(
                "No such queue", f"There is no queue {name!r} here.", where=_where(request)
            ),
            404,
        )
    try:
        page = int(request.query.get("page", "1"))
    except ValueError:
        page = 0
    if page < 1:
        return _html(
            message_page("No such page", "Pages are numbered from 1.", where=_where(request)), 400
        )
    try:
        q = await watcher.queue(name)
        stats = await q.astatistics()
        dead = stats.dead_lettered
        letters = await q.adead_letters(PER_PAGE, (page - 1) * PER_PAGE, newest_first=True)
    except QueueNotFound:
        return _html(message_page("No such queue", f"There is no queue {name!r} here."), 404)
    except (ChuteError, OSError) as exc:
        return _html(message_page("The store cannot be read", str(exc), where=_where(request)), 503)
    view.set_numbers(stats)  # as read now, for the page (the charts' history is the watcher's)
    pages = math.ceil(dead / PER_PAGE)
    return _html(
        queue_page(
            view.as_json(),
            letters,
            page=page,
            pages=pages,
            per_page=PER_PAGE,
            csrf=_csrf(request),
            where=_where(request),
        )
    )


async def act(request: web.Request) -> web.Response:
    """Requeue or purge dead letters: ``{"ids": [...]}`` or ``{"all": true}``."""
    watcher = request.app[WATCHER]
    name, what = request.match_info["name"], request.match_info["what"]
    try:
        asked = await request.json()
    except ValueError:
        return _said(400, False, "The request is not JSON.")
    ids = asked.get("ids") if isinstance(asked, dict) else None
    every = isinstance(asked, dict) and asked.get("all") is True
    if not every and (
        not isinstance(ids, list)
        or not ids
        or len(ids) > MAX_IDS
        or not all(isinstance(i, str) for i in ids)
    ):
        return _said(400, False, 'Say {"ids": ["...", ...]} or {"all": true}.')
    chosen: list[str] | None = None if every else ids
    if name not in watcher.views:
        return _said(404, False, f"There is no queue {name!r} here.")
    try:
        q = await watcher.queue(name)
        if what == "requeue":
            done = await q.arequeue_dead(chosen)
        else:
            done = len(await q.apurge_dead(chosen))
    except QueueShutDown:
        return _said(409, False, f"{name} is shut down: nothing was requeued.")
    except ValueError as exc:
        return _said(400, False, f"Nothing was done: {exc}")
    except (ChuteError, OSError) as exc:
        return _said(503, False, f"The store cannot be reached, nothing was done: {exc}")
    verb = "Requeued" if what == "requeue" else "Purged"
    message = f"{verb} {done} dead letter{'' if done == 1 else 's'}."
    if chosen is not None and done < len(chosen):
        gone = len(chosen) - done
        message += (
            f" {gone} of the {len(chosen)} chosen {'was' if gone == 1 else 'were'} no longer "
            "there (requeued or purged meanwhile, by someone else?): nothing done for "
            f"{'it' if gone == 1 else 'them'}."
        )
    logger.info("%s: %s", name, message)
    await watcher.look()  # the numbers on every open page follow at once
    return _said(200, done > 0 or every, message, done=done)


def _said(status: int, ok: bool, message: str, **more: Any) -> web.Response:
    return web.json_response({"ok": ok, "message": message, **more}, status=status)
