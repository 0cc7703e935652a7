"""Workers: a consumer pool on any queue, sized by the backlog."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import chute
from tests.conftest import calls_answered, wait_until

pytestmark = pytest.mark.timeout(120)


async def test_every_item_is_handled_once_and_run_ends_when_drained(make):
    q = await make()
    seen: list[int] = []

    async def handle(item: int) -> None:
        seen.append(item)

    await q.put_batch(range(50))
    q.shutdown()  # run() ends once the queue is drained
    stats = await asyncio.wait_for(chute.Workers(q, handle, max_workers=4).run(), 30)
    assert sorted(seen) == list(range(50))
    assert (stats.processed, stats.failed, stats.in_flight, stats.workers) == (50, 0, 0, 0)
    assert q.statistics().unfinished_tasks == 0


async def test_a_plain_function_runs_in_threads(make):
    q = await make()
    threads: set[str] = set()

    def handle(item: int) -> None:
        threads.add(threading.current_thread().name)

    await q.put_batch(range(5))
    q.shutdown()
    await asyncio.wait_for(chute.Workers(q, handle).run(), 30)
    assert threads
    assert all(name.startswith("chute-worker") for name in threads)


async def test_failures_are_retried_with_backoff_then_dead_lettered(make):
    q = await make(max_deliveries=3)
    tries: list[int] = []

    async def handle(item: str) -> None:
        tries.append(item)
        raise RuntimeError("always fails")

    await q.put("poison")
    async with chute.Workers(q, handle, retry_delay=0.01, scale_every=None) as workers:
        await wait_until(lambda: q.statistics().dead_lettered == 1, timeout=30)
    assert tries == ["poison"] * 3
    s = workers.statistics()
    # Two tries given back; the third failure was its last: dead, not retried.
    assert (s.processed, s.failed, s.retried, s.dead) == (0, 3, 2, 1)
    assert [d.item for d in q.dead_letters()] == ["poison"]


async def test_autoscaling_follows_the_backlog(make):
    q = await make()
    release = asyncio.Event()

    async def handle(item: int) -> None:
        await release.wait()

    await q.put_batch(range(40))
    workers = chute.Workers(q, handle, min_workers=1, max_workers=8, scale_every=None)
    async with workers:
        await wait_until(lambda: workers.statistics().in_flight == 1)
        for expected in (2, 4, 8, 8):  # doubling while the backlog waits, up to the max
            assert workers.rescale() == expected
            await wait_until(lambda n=expected: workers.statistics().in_flight == n)
        release.set()
        await wait_until(lambda: workers.statistics().processed == 40, timeout=30)
        await wait_until(lambda: workers.statistics().in_flight == 0)
        # Shrinking needs three quiet looks in a row, then halves the idle ones.
        assert [workers.rescale() for _ in range(3)] == [8, 8, 4]
        assert [workers.rescale() for _ in range(6)] == [4, 4, 2, 2, 2, 1]
        assert workers.rescale() == 1  # never below min_workers
        # A backlog one idle worker can take: no growth. The put and the look
        # run with no await between them, so the worker has not taken the
        # item yet: one item waits (where the store does not hand it to the
        # blocked read itself, as Redis does) and one worker is idle.
        q.put_nowait(99)
        if make.transport != "redis":
            assert (q.qsize(), workers.statistics().in_flight) == (1, 0)
        assert workers.rescale() == 1
        await wait_until(lambda: workers.statistics().processed == 41, timeout=30)


async def test_shutdown_lets_handlers_finish_and_leaves_the_rest(make):
    q = await make()
    started = asyncio.Event()
    release = asyncio.Event()
    done: list[int] = []

    async def handle(item: int) -> None:
        started.set()
        await release.wait()
        done.append(item)

    await q.put_batch(range(10))
    workers = chute.Workers(q, handle, min_workers=1, max_workers=1, scale_every=None)
    workers.start()
    await asyncio.wait_for(started.wait(), 10)
    workers.shutdown()
    waiting = asyncio.ensure_future(workers.wait())
    await calls_answered(q)
    assert not waiting.done()  # the item in hand is being finished
    release.set()
    stats = await asyncio.wait_for(waiting, 10)
    assert done == [0]
    assert stats.processed == 1
    assert q.qsize() == 9  # the others were never taken


async def test_a_handler_past_its_grace_is_cancelled_and_its_item_given_back(make):
    q = await make()
    started = asyncio.Event()

    async def handle(item: str) -> None:
        started.set()
        await asyncio.Event().wait()  # never finishes

    await q.put("stuck")
    workers = chute.Workers(q, handle, grace=0.05, scale_every=None)
    workers.start()
    await asyncio.wait_for(started.wait(), 10)
    workers.shutdown()
    await asyncio.wait_for(workers.wait(), 10)
    assert q.qsize() == 1
    async with q.reserve() as job:
        assert (job.item, job.deliveries) == ("stuck", 2)


async def test_statistics_measure_latency_and_throughput(make):
    q = await make()

    async def handle(item: int) -> None:
        # At least ``item`` ms by the monotonic clock: uvloop's timers count
        # whole milliseconds from the start of the loop's pass and may end
        # a sleep up to a millisecond early (a 20 ms sleep took 19.3 ms).
        until = time.monotonic() + 0.001 * item
        for _ in range(100):  # each sleep ends at most a loop pass early
            left = until - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)
        raise AssertionError("the loop's timers never reached the handler's deadline")

    await q.put_batch([1, 2, 3, 4, 20])
    q.shutdown()
    workers = chute.Workers(q, handle, max_workers=1)
    stats = await asyncio.wait_for(workers.run(), 30)
    assert stats.processed == 5
    assert stats.latency_p50 is not None
    assert stats.latency_p95 is not None
    assert 0.003 <= stats.latency_p50 <= stats.latency_p95
    assert stats.latency_p95 >= 0.02
    assert stats.throughput >= 5 / 5.0  # five items, in well under five seconds


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"min_workers": -1}, ValueError),
        ({"max_workers": 0}, ValueError),
        ({"min_workers": 3, "max_workers": 2}, ValueError),
        ({"grace": -1}, ValueError),
        ({"retry_delay": float("nan")}, ValueError),
        ({"scale_every": 0}, ValueError),
    ],
)
def test_bad_arguments_are_refused(options, error):
    with pytest.raises(error):
        chute.Workers(chute.Queue(), print, **options)


def test_a_handler_and_a_queue_are_checked():
    with pytest.raises(TypeError, match="callable"):
        chute.Workers(chute.Queue(), "not a function")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reserve"):
        chute.Workers([1, 2], print)


def test_sigterm_while_handling_loses_nothing(tmp_path):
    path = tmp_path / "jobs.db"
    log = tmp_path / "handled"
    code = f"""
        import asyncio, os, chute

        async def handle(item):
            await asyncio.sleep(0.02)
            with open({str(log)!r}, "a") as f:
                f.write(f"{{item}}\\n")

        async def main():
            async with chute.open("sqlite:///{path}", "jobs") as q:
                if q.qsize() == 0 and q.statistics().total_put == 0:
                    await q.put_batch(range(200))
                print("ready", flush=True)
                await chute.Workers(q, handle, max_workers=4, grace=5).run()

        asyncio.run(main())
    """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        while not log.exists() or len(log.read_text().split()) < 20:
            assert child.poll() is None, "the worker process died"
            threading.Event().wait(0.01)
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0  # a graceful exit
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    handled = [int(x) for x in log.read_text().split()]
    assert len(handled) == len(set(handled))  # each acknowledged once

    async def rest() -> list[int]:
        async with chute.open(f"sqlite:///{path}", "jobs") as q:
            return await q.get_batch(1000, timeout=0) if q.qsize() else []

    left = asyncio.run(rest())
    assert sorted(handled + left) == list(range(200))  # nothing lost


async def test_a_plain_function_runs_in_worker_processes(make, tmp_path):
    from tests.workers.handlers import record

    q = await make(max_deliveries=2)
    out = tmp_path / "out.txt"
    await q.put_batch([[str(out), n] for n in range(40)])
    await q.put([str(out), "fail"])
    q.shutdown()
    workers = chute.Workers(q, record, max_workers=4, processes=2, retry_delay=0.01)
    stats = await asyncio.wait_for(workers.run(), 60)
    lines = [line.split() for line in out.read_text().splitlines()]
    assert sorted(int(n) for n, _ in lines) == list(range(40))
    pids = {int(pid) for _, pid in lines}
    assert os.getpid() not in pids  # handled in the worker processes
    assert (stats.processed, stats.failed, stats.retried, stats.dead) == (40, 2, 1, 1)
    [dead] = q.dead_letters()
    assert dead.item == [str(out), "fail"]
    # Why it died, from the worker process: the type, the message and the
    # traceback there (the handler's line included).
    assert (dead.error_type, dead.error) == ("ValueError", "this one always fails")
    assert dead.traceback is not None
    assert "(in the worker process)" in dead.traceback
    assert 'raise ValueError("this one always fails")' in dead.traceback


def test_processes_need_a_plain_importable_function():
    async def handle(item: object) -> None:
        pass

    with pytest.raises(ValueError, match="not async def"):
        chute.Workers(chute.Queue(), handle, processes=2)
    with pytest.raises(ValueError, match="top level of a module"):
        chute.Workers(chute.Queue(), lambda item: None, processes=2)
    with pytest.raises(ValueError, match="processes"):
        chute.Workers(chute.Queue(), print, processes=-1)


async def test_a_worker_process_that_dies_is_replaced_and_its_item_retried(tmp_path):
    from tests.workers.handlers import die_once

    q = chute.Queue()
    out = tmp_path / "out.txt"
    await q.put_batch([[str(out), n] for n in range(5)])
    q.shutdown()
    workers = chute.Workers(q, die_once, processes=1, retry_delay=0.01)
    assert workers.max_workers == 1  # no more items taken than processes to run them
    stats = await asyncio.wait_for(workers.run(), 60)
    assert sorted(int(line.split()[0]) for line in out.read_text().splitlines()) == list(range(5))
    assert (stats.processed, stats.failed, stats.retried) == (5, 1, 1)


async def test_a_pool_of_no_minimum_grows_again_for_a_backlog():
    q = chute.Queue()
    workers = chute.Workers(q, asyncio.sleep, min_workers=0, scale_every=None)
    async with workers:
        await q.put(0)
        await wait_until(lambda: workers.statistics().processed == 1)
        await wait_until(lambda: workers.statistics().in_flight == 0)
        assert [workers.rescale() for _ in range(3)] == [1, 1, 0]
        await q.put(0)
        assert workers.rescale() == 1  # nobody to take it: one worker, whatever the pace
        await wait_until(lambda: workers.statistics().processed == 2)


async def test_a_queue_closed_under_the_pool_ends_it(tmp_path):
    q = await chute.open(f"sqlite:///{tmp_path}/q.db", "q")
    workers = chute.Workers(q, asyncio.sleep, scale_every=None)
    running = asyncio.ensure_future(workers.run())
    await wait_until(lambda: workers.workers == 1)
    q.close()
    await asyncio.wait_for(running, 10)


def test_a_handler_raising_systemexit_gives_its_item_back_first():
    code = """
        import asyncio, chute

        q = chute.Queue()

        async def handle(item):
            raise SystemExit(3)

        async def main():
            await q.put("kept")
            await chute.Workers(q, handle).run()

        try:
            asyncio.run(main())
        except SystemExit as exc:
            assert exc.code == 3
        assert q.qsize() == 1, q.statistics()
        print("given back")
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "given back"
