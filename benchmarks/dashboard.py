"""How fast ``chute dashboard`` serves a queue with 100,000 dead letters.

One SQLite file, made once per benchmark run: a queue whose dead letters
are 100,000 copies of one real dead letter (buried through the API, then
copied row by row in SQL: burying 100,000 items one at a time would take
minutes and is not what is measured), and 1,000 items waiting. The
dashboard runs in this process on a loopback port; a run asks for N pages
over HTTP one after another (aiohttp's client) and counts pages a second.
The target: a page well under 0.5 s, i.e. above 2 pages/s.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from typing import Any

DEFAULT_ITEMS = 20  # pages a run
DEAD = 100_000

_folder = tempfile.TemporaryDirectory(prefix="chute-bench-dashboard-")
_made: str | None = None


@dataclass(frozen=True)
class Way:
    name: str
    path: str
    note: str = ""
    module: str = "chute"
    versus: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str

    def supports(self, way: Way) -> bool:
        return True


SCENARIOS = (Scenario(f"dashboard, sqlite: a queue with {DEAD:,} dead letters"),)
SUBJECT = Way(
    "first page",
    "/queues/jobs",
    note="first page: `/queues/jobs`, the newest 50 dead letters with the queue's numbers.",
)
PEERS = (
    Way(
        "last page",
        f"/queues/jobs?page={DEAD // 50}",
        note=f"last page: `/queues/jobs?page={DEAD // 50}`, the oldest 50 (an offset of "
        f"{DEAD - 50:,}).",
    ),
    Way("queue list", "/", note="queue list: `/`, every queue's numbers."),
)
NOTES = (
    "Pages a second, each the whole HTML made on the server and read by the client, one "
    "request after another. No (Nx): the columns are different pages, not rivals.",
)


async def _make() -> str:
    import chute

    path = os.path.join(_folder.name, "dash.db")
    url = f"sqlite:///{path}"
    async with chute.open(url, "jobs", max_deliveries=1) as q:
        await q.put({"to": "someone@example.com", "body": "x" * 200})
        job = await q.reserve(timeout=10)
        try:
            raise ConnectionError("smtp.example.com refused it")
        except ConnectionError as exc:
            await job.anack(error=exc)
        await q.put_batch(list(range(1_000)))
    with sqlite3.connect(path) as db:
        db.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
            INSERT INTO chute_dead (queue, data, deliveries, died_at, reason, last_error)
            SELECT queue, data, deliveries, died_at + i, reason, last_error
            FROM chute_dead, n WHERE queue = 'jobs'
            """,
            (DEAD - 1,),
        )
    return url


async def run_once(sc: Scenario, way: Way, module: Any, n: int, timeout: float) -> float:
    import aiohttp
    from aiohttp import web

    from chute.dashboard import make_app

    global _made
    if _made is None:
        _made = await _make()
    runner = web.AppRunner(make_app(_made), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://{host}:{port}{way.path}"
            async with session.get(url) as answer:  # a first one, not timed
                page = await answer.text()
            assert answer.status == 200, page[:500]
            assert way.path == "/" or page.count('class="pick"') == 50, page[:500]
            t0 = time.perf_counter()
            for _ in range(n):
                async with session.get(url) as answer:
                    await answer.read()
            elapsed = time.perf_counter() - t0
    finally:
        await runner.cleanup()
    return n / elapsed
