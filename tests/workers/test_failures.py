"""Workers: failures users can see (logged, kept with the dead letter,
counted for what they became) and a stop that says what it waits for."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import signal
import threading
from typing import Any

import pytest

import chute
import chute._workers
import chute._workers.failures
from tests.conftest import calls_answered, wait_until

pytestmark = pytest.mark.timeout(120)

_locked = itertools.count()  # queue names on the shared server: never reused


def records(caplog: Any, level: int | None = None) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "chute.workers" and (level is None or r.levelno == level)
    ]


async def test_an_item_dead_on_its_first_failure_is_dead_not_retried(make):
    q = await make(max_deliveries=1)

    async def handle(item: int) -> None:
        raise ValueError(f"bad item {item}")

    await q.put(7)
    q.shutdown()
    stats = await asyncio.wait_for(chute.Workers(q, handle, retry_delay=0.01).run(), 30)
    assert (stats.processed, stats.failed, stats.retried, stats.dead) == (0, 1, 0, 1)
    # The dead letter says why it died: the handler's exception.
    [dead] = q.dead_letters()
    assert (dead.item, dead.deliveries, dead.reason) == (7, 1, "failed")
    assert (dead.error_type, dead.error) == ("ValueError", "bad item 7")
    assert dead.traceback is not None
    assert 'raise ValueError(f"bad item {item}")' in dead.traceback


async def test_run_on_a_shut_down_queue_waits_for_an_item_given_back_with_a_delay(make):
    q = await make(max_deliveries=2)
    tries: list[int] = []

    async def handle(item: int) -> None:
        tries.append(item)
        if len(tries) == 1:
            raise RuntimeError("the first try fails")

    await q.put(1)
    q.shutdown()  # drained only once the retried item is done
    stats = await asyncio.wait_for(chute.Workers(q, handle, retry_delay=0.05).run(), 30)
    assert tries == [1, 1]
    assert (stats.processed, stats.failed, stats.retried, stats.dead) == (1, 1, 1, 0)


async def test_run_on_a_shut_down_queue_keeps_an_item_whose_delay_ran_out_while_it_looked(make):
    """A worker finds the shut-down queue empty and asks whether anything
    may come back; by the time the answer arrives the retried item's delay
    has run out: it is no longer delayed but waiting (``size``), and the
    pool must not call the queue drained. (A slow round trip, made so here;
    on PostgreSQL a 0.01 s retry delay meets it about one run in three.)"""
    q = await make(max_deliveries=2)
    tries: list[int] = []

    async def handle(item: int) -> None:
        tries.append(item)
        if len(tries) == 1:
            raise RuntimeError("the first try fails")

    look = q.astatistics

    async def slow_look() -> Any:
        await asyncio.sleep(0.1)  # past the retry's delay of 0.02 s
        return await look()

    q.astatistics = slow_look
    await q.put(1)
    q.shutdown()
    stats = await asyncio.wait_for(chute.Workers(q, handle, retry_delay=0.02).run(), 30)
    assert tries == [1, 1]
    assert (stats.processed, stats.failed, stats.retried, stats.dead) == (1, 1, 1, 0)
    assert q.qsize() == 0


async def test_a_shut_down_postgres_queue_is_not_drained_while_another_claim_holds_its_item():
    """Another consumer's claim has locked the last item (``FOR UPDATE``,
    its transaction not yet committed): the pool must not take the queue
    for drained, for that claim may yet roll back (a cancelled reserve)
    and leave the item there. Here it does roll back: the pool handles it."""
    asyncpg = pytest.importorskip("asyncpg")
    from tests.postgres_server import shared_server

    url = shared_server().url
    q = await chute.open(url, f"w-locked-{os.getpid()}-{next(_locked)}")
    handled: list[str] = []

    async def handle(item: str) -> None:
        handled.append(item)

    try:
        await q.put("x")
        q.shutdown()
        conn = await asyncpg.connect(url)
        try:
            claim = conn.transaction()
            await claim.start()
            await conn.execute(
                "SELECT i.id FROM chute.chute_item i JOIN chute.chute_queue n ON n.id = i.queue"
                " WHERE n.name = $1 FOR UPDATE OF i",
                q.name,
            )
            workers = chute.Workers(q, handle, scale_every=None)
            running = asyncio.ensure_future(workers.run())
            await wait_until(lambda: workers.workers == 1)
            await calls_answered(q)
            assert not running.done(), handled  # the item is not gone: not drained
            await claim.rollback()
        finally:
            await conn.close()
        stats = await asyncio.wait_for(running, 30)
        assert (handled, stats.processed, q.qsize()) == (["x"], 1, 0)
    finally:
        await q.aclose()


async def test_a_plain_function_s_exception_reaches_the_dead_letter_too():
    q = chute.Queue(max_deliveries=2)

    def handle(item: str) -> None:
        raise KeyError(item)

    await q.put("k")
    q.shutdown()
    stats = await asyncio.wait_for(chute.Workers(q, handle, retry_delay=0.01).run(), 30)
    assert (stats.failed, stats.retried, stats.dead) == (2, 1, 1)
    [dead] = q.dead_letters()
    assert (dead.deliveries, dead.error_type, dead.error) == (2, "KeyError", "'k'")
    assert dead.traceback is not None
    assert "raise KeyError(item)" in dead.traceback


def test_chute_adds_no_log_handlers():
    # The application decides where records go (the command configures its own).
    assert chute._workers.logger is logging.getLogger("chute.workers")
    assert logging.getLogger("chute").handlers == []
    assert logging.getLogger("chute.workers").handlers == []


async def test_a_thousand_identical_failures_are_logged_once_in_full_then_counted(
    caplog, monkeypatch
):
    monkeypatch.setattr(chute._workers.failures, "_clock", lambda: 1000.0)  # no time passes
    caplog.set_level(logging.INFO, logger="chute.workers")
    q = chute.Queue(max_deliveries=1)

    async def handle(item: int) -> None:
        if item == 500:
            raise KeyError(item)  # another kind of failure, amid the flood
        raise ValueError(f"bad item {item}")  # messages differ; the failure is the same

    await q.put_batch(range(1000))
    q.shutdown()
    stats = await asyncio.wait_for(chute.Workers(q, handle, max_workers=4).run(), 60)
    assert (stats.failed, stats.retried, stats.dead) == (1000, 0, 1000)

    errors = records(caplog, logging.ERROR)
    full = [r for r in errors if r.exc_info]
    # The first of each kind, with its traceback; the other one in full too.
    assert sorted(r.exc_info[0].__name__ for r in full if r.exc_info) == ["KeyError", "ValueError"]
    for r in full:
        assert re.fullmatch(
            r"handler tests\.workers\.test_failures:.*handle failed on \d+ "
            r"\(delivery 1; moved to the dead letters\): (ValueError: bad item|KeyError:) \d+",
            r.getMessage(),
        ), r.getMessage()
        assert "in handle" in logging.Formatter().format(r)  # the traceback is in the record
    # The 998 other ValueErrors: one line, when the pool stopped.
    [summary] = [r.getMessage() for r in errors if not r.exc_info]
    assert re.fullmatch(
        r"\.\.\. and 998 more ValueError at test_failures\.py:\d+ in handle since "
        r"\d\d:\d\d:\d\d \(the last: ValueError: bad item \d+\)",
        summary,
    ), summary
    assert len(records(caplog)) <= 8  # and a few lines of the pool's life


async def test_repeats_are_summed_up_at_most_every_repeat_every_seconds(caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(chute._workers.failures, "_clock", lambda: now[0])
    caplog.set_level(logging.ERROR, logger="chute.workers")
    q = chute.Queue(max_deliveries=1)

    async def handle(item: int) -> None:
        raise ValueError(item)

    assert chute._workers.REPEAT_EVERY == 10
    workers = chute.Workers(q, handle, scale_every=None)
    async with workers:
        for n, at in enumerate([0, 1, 5, 9.9, 10, 12, 19.9, 20, 21], 1):
            now[0] = 1000.0 + at
            q.put_nowait(n)
            await wait_until(lambda n=n: workers.statistics().failed == n)
    lines = [
        (r.getMessage() if not r.exc_info else "in full: " + str(r.exc_info[1]))
        for r in records(caplog)
    ]
    counts = [re.sub(r" since \S+ ", " ", line) for line in lines]
    at = re.search(r"at test_failures\.py:\d+ in handle", lines[1])
    assert at is not None
    assert counts == [
        "in full: 1",
        f"... and 4 more ValueError {at[0]} (the last: ValueError: 5)",  # at 10 s
        f"... and 3 more ValueError {at[0]} (the last: ValueError: 8)",  # at 20 s
        f"... and 1 more ValueError {at[0]} (the last: ValueError: 9)",  # when it stopped
    ]


async def test_the_pool_s_life_is_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="chute.workers")
    q = chute.Queue()
    release = asyncio.Event()

    async def handle(item: int) -> None:
        await release.wait()

    await q.put_batch(range(3))
    workers = chute.Workers(q, handle, min_workers=1, max_workers=2, grace=5, scale_every=None)
    workers.start()
    await wait_until(lambda: workers.statistics().in_flight == 1)
    assert workers.rescale() == 2
    await wait_until(lambda: workers.statistics().in_flight == 2)
    workers.shutdown()
    release.set()
    await asyncio.wait_for(workers.wait(), 10)
    assert [(r.levelname, r.getMessage()) for r in records(caplog)] == [
        (
            "INFO",
            f"started on {q!r}: 1 worker (min 1, max 2), handler {handle.__module__}:"
            f"{handle.__qualname__}",
        ),
        ("DEBUG", "scaled up from 1 worker to 2 (2 items waiting)"),
        ("INFO", "stopping: 2 jobs in hand (grace 5 s)"),
        ("INFO", "stopped: 2 processed, 0 failed (0 retried, 0 dead)"),
    ]


async def test_a_second_stop_gives_the_jobs_in_hand_back_at_once(make, caplog):
    caplog.set_level(logging.INFO, logger="chute.workers")
    q = await make()

    async def handle(item: str) -> None:
        await asyncio.Event().wait()  # never finishes

    await q.put_batch(["a", "b", "c"])
    workers = chute.Workers(q, handle, min_workers=2, max_workers=2, grace=60, scale_every=None)
    workers.start()
    await wait_until(lambda: workers.statistics().in_flight == 2)
    workers.shutdown()
    # What the command shows: "stopping: waiting for 2 jobs (grace 60 s)".
    assert (workers.stopping, workers.grace, workers.statistics().in_flight) == (True, 60, 2)
    stopped = asyncio.ensure_future(workers.wait())
    workers.shutdown(immediate=True)  # the second request: no more grace
    stats = await asyncio.wait_for(stopped, 10)  # well within the 60 s of grace
    assert (stats.in_flight, stats.workers, stats.processed) == (0, 0, 0)
    assert q.qsize() == 3  # both given back, the third never taken
    assert [r.getMessage() for r in records(caplog, logging.WARNING)] == [
        "stopping now: giving back 2 jobs in hand"
    ]


async def test_a_second_sigint_to_run_gives_the_jobs_in_hand_back_at_once():
    # run() installs its signal handlers on the main thread only; this test runs there.
    assert threading.current_thread() is threading.main_thread()
    q = chute.Queue()

    async def handle(item: str) -> None:
        await asyncio.Event().wait()

    await q.put("held")
    workers = chute.Workers(q, handle, grace=60, scale_every=None)
    running = asyncio.ensure_future(workers.run())
    await wait_until(lambda: workers.statistics().in_flight == 1)
    signal.raise_signal(signal.SIGINT)  # Ctrl-C: stop gracefully
    await wait_until(lambda: workers.stopping)
    assert workers.statistics().in_flight == 1
    assert not running.done()
    signal.raise_signal(signal.SIGINT)  # Ctrl-C again: give it back now
    stats = await asyncio.wait_for(running, 10)
    assert (stats.in_flight, stats.processed) == (0, 0)
    async with q.reserve(timeout=0) as job:
        assert (job.item, job.deliveries) == ("held", 2)
