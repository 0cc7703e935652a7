"""chute dashboard over HTTP: what each page and each change does, who may
do it, and what happens when the store goes away. A real server on a free
loopback port, real queues."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import chute
from chute.dashboard import make_app
from chute.dashboard.app import PER_PAGE
from tests.conftest import wait_until
from tests.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.timeout(90), pytest.mark.loops("asyncio")]


@contextlib.asynccontextmanager
async def dashboard(url: str, **options: Any) -> AsyncIterator[str]:
    """The dashboard over ``url``, served on a free loopback port: its address."""
    runner = web.AppRunner(make_app(url, every=0.1, **options))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def bury(q: Any, items: list[Any]) -> None:
    """Make dead letters of ``items`` (the queue has max_deliveries=1)."""
    await q.put_batch(items)
    for _ in items:
        job = await q.reserve(timeout=10)
        try:
            raise ValueError(f"failed on {job.item}")
        except ValueError as exc:
            await job.anack(error=exc)


async def csrf_of(session: aiohttp.ClientSession, page: str) -> str:
    async with session.get(page) as answer:
        html = await answer.text()
    found = re.search(r'name="chute-csrf" content="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def test_the_pages_show_the_queues_and_their_dead_letters_page_by_page(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    async with chute.open(url, "emails", max_deliveries=1) as q:
        await bury(q, [f"mail {i}" for i in range(PER_PAGE + 5)])
        await q.put("waiting")
        async with dashboard(url) as site, aiohttp.ClientSession() as session:
            async with session.get(f"{site}/api/queues") as answer:
                state = await answer.json()
            [emails] = state["queues"]
            assert (emails["name"], emails["ready"], emails["dead"]) == ("emails", 1, PER_PAGE + 5)
            assert emails["oldest_age"] >= 0
            async with session.get(site) as answer:
                assert answer.status == 200
                assert 'href="queues/emails"' in await answer.text()
            async with session.get(f"{site}/queues/emails") as answer:
                first = await answer.text()
            assert first.count('class="pick"') == PER_PAGE
            assert f"mail {PER_PAGE + 4}" in first  # newest first
            assert "ValueError</b>: failed on mail" in first
            assert "page 1 of 2" in first
            async with session.get(f"{site}/queues/emails?page=2") as answer:
                second = await answer.text()
            assert second.count('class="pick"') == 5
            assert "&quot;mail 0&quot;" in second
            async with session.get(f"{site}/queues/emails?page=7") as answer:
                past = await answer.text()
            assert answer.status == 200
            assert "Page 7 is past the end: there are 2 pages" in past
            async with session.get(f"{site}/queues/nope") as answer:
                assert answer.status == 404
            async with session.get(f"{site}/queues/emails?page=x") as answer:
                assert answer.status == 400


async def test_requeue_and_purge_chosen_letters_and_say_what_was_gone(store):
    url, name = store
    async with chute.open(url, name, max_deliveries=1) as q:
        await bury(q, ["a", "b", "c", "d"])
        ids = {d.item: d.id for d in await q.adead_letters()}
        async with dashboard(url) as site, aiohttp.ClientSession() as session:
            csrf = await csrf_of(session, f"{site}/queues/{name}")
            headers = {"X-Chute-CSRF": csrf}
            act = f"{site}/queues/{name}/dead"
            async with session.post(
                f"{act}/requeue", json={"ids": [ids["a"]]}, headers=headers
            ) as answer:
                said = await answer.json()
            assert (answer.status, said["done"]) == (200, 1)
            assert await q.get(timeout=10) == "a"
            # "a" is gone from the dead letters: asked again, nothing done for it.
            async with session.post(
                f"{act}/requeue", json={"ids": [ids["a"], ids["b"]]}, headers=headers
            ) as answer:
                said = await answer.json()
            assert said["done"] == 1
            assert "1 of the 2 chosen was no longer there" in said["message"]
            async with session.post(
                f"{act}/purge", json={"ids": [ids["c"]]}, headers=headers
            ) as answer:
                assert (await answer.json())["done"] == 1
            assert [d.item for d in await q.adead_letters()] == ["d"]
            async with session.post(f"{act}/purge", json={"all": True}, headers=headers) as answer:
                assert (await answer.json())["done"] == 1
            assert await q.adead_letters() == []
            async with session.post(f"{act}/purge", json={"ids": []}, headers=headers) as answer:
                assert answer.status == 400


async def test_a_change_without_the_pages_secret_or_from_another_site_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    async with chute.open(url, "emails", max_deliveries=1) as q:
        await bury(q, ["a"])
        async with dashboard(url) as site, aiohttp.ClientSession() as session:
            act = f"{site}/queues/emails/dead/purge"
            async with session.post(act, json={"all": True}) as answer:
                assert answer.status == 403
            async with session.post(
                act, json={"all": True}, headers={"X-Chute-CSRF": "guess"}
            ) as answer:
                assert answer.status == 403
            csrf = await csrf_of(session, site)
            async with session.post(
                act,
                json={"all": True},
                headers={"X-Chute-CSRF": csrf, "Origin": "http://evil.example"},
            ) as answer:
                assert answer.status == 403
            # A form of another site (no custom header can come with it).
            async with session.post(act, data={"all": "true"}) as answer:
                assert answer.status == 403
        assert [d.item for d in q.dead_letters()] == ["a"]


async def test_a_token_is_asked_of_every_request(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    async with chute.open(url, "emails", max_deliveries=1) as q:
        await bury(q, ["a"])
        async with dashboard(url, token="s3cret") as site:
            async with aiohttp.ClientSession() as stranger:
                async with stranger.get(site) as answer:
                    assert answer.status == 401
                async with stranger.get(f"{site}/api/queues?token=wrong") as answer:
                    assert answer.status == 403
                async with stranger.get(
                    f"{site}/api/queues", headers={"Authorization": "Bearer wrong"}
                ) as answer:
                    assert answer.status == 403
                async with stranger.post(
                    f"{site}/queues/emails/dead/purge", json={"all": True}
                ) as answer:
                    assert answer.status == 401
            # unsafe=True: keep cookies of an IP address, as a browser does.
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as user:
                # The address printed: the token moves into a cookie.
                async with user.get(f"{site}/?token=s3cret") as answer:
                    assert answer.status == 200
                    assert "token" not in str(answer.url)
                async with user.get(f"{site}/api/queues") as answer:
                    assert answer.status == 200
            async with (
                aiohttp.ClientSession() as script,
                script.get(
                    f"{site}/api/queues", headers={"Authorization": "Bearer s3cret"}
                ) as answer,
            ):
                assert answer.status == 200
        assert [d.item for d in q.dead_letters()] == ["a"]


async def test_a_store_that_goes_away_is_said_and_the_page_recovers():
    server = RedisServer(appendonly=True).start()  # it keeps the queue across its restart
    try:
        async with chute.open(server.url, "jobs") as q:
            await q.put("x")
        async with dashboard(server.url) as site, aiohttp.ClientSession() as session:

            async def state() -> dict[str, Any]:
                async with session.get(f"{site}/api/queues") as answer:
                    assert answer.status == 200  # the dashboard itself keeps running
                    return dict(await answer.json())

            assert (await state())["error"] is None
            server.stop()
            deadline = time.monotonic() + 30
            while (await state())["error"] is None:
                assert time.monotonic() < deadline, "the store's absence was never said"
                await asyncio.sleep(0.1)
            async with session.get(f"{site}/queues/jobs") as answer:
                assert answer.status == 503
                assert "cannot be read" in await answer.text()
            server.start()
            while (s := await state())["error"] is not None:
                assert time.monotonic() < deadline + 30, "the page never recovered"
                await asyncio.sleep(0.1)
            assert s["queues"][0]["ready"] == 1
    finally:
        server.remove()


async def test_the_events_stream_sends_the_numbers_as_they_change(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    async with (
        chute.open(url, "emails") as q,
        dashboard(url) as site,
        aiohttp.ClientSession() as session,
        session.get(f"{site}/events") as answer,
    ):
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        seen: list[int] = []

        async def read() -> None:
            async for line in answer.content:
                if line.startswith(b"data: "):
                    state = json.loads(line[6:])
                    seen.append(state["queues"][0]["ready"] if state["queues"] else -1)

        reader = asyncio.create_task(read())
        await wait_until(lambda: bool(seen))
        await q.put_batch([1, 2, 3])
        await wait_until(lambda: seen[-1] == 3)
        reader.cancel()


def test_the_command_listens_on_loopback_and_makes_up_a_token_beyond_it(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    subprocess.run([sys.executable, "-m", "chute", "put", url, "q", "1"], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    for host, token in (("127.0.0.1", False), ("0.0.0.0", True)):
        board = subprocess.Popen(
            [sys.executable, "-m", "chute", "dashboard", url, "--host", host, "--port", "0"],
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "CHUTE_DASHBOARD_TOKEN"},
        )
        try:
            assert board.stderr is not None
            line = board.stderr.readline()
            assert "chute dashboard over" in line, line
            assert ("?token=" in line) == token, line
            if not token:
                # A page left open (its event stream) does not hold the stop up.
                address = line.split(" on ", 1)[1].split()[0]
                stream = urllib.request.urlopen(address + "events", timeout=30)
                assert stream.readline().startswith(b"retry:")
        finally:
            board.send_signal(signal.SIGINT)
            board.communicate(timeout=15)
        assert board.returncode == 0
