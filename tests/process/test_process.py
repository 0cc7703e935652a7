"""ProcessQueue between real processes: start methods, names, shutdown, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import chute
from chute._process import ProcessQueue
from chute._process.layout import H_HEAD, H_HOLDER, H_REPAIR_DUE, H_TAIL_HOLDER
from chute._process.layout import shm_dir as _shm_dir
from chute._process.lock import SPLIT_LOCKS
from tests.conftest import wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform == "win32", reason="ProcessQueue is POSIX-only"),
]

METHODS = [m for m in ("fork", "spawn", "forkserver") if m in mp.get_all_start_methods()]


def leftovers(name: str) -> list[str]:
    return glob.glob(os.path.join(_shm_dir(), f"chute-{name}*")) + glob.glob(
        f"/dev/shm/sem.chute-{name}*"  # the head lock's and the tail lock's
    )


# -- children (module level, so that spawn can import them) -----------------------


def produce(q: ProcessQueue[int], start: int, n: int) -> None:
    for i in range(start, start + n):
        q.sync.put(i)


def produce_async(q: ProcessQueue[int], n: int) -> None:
    async def main() -> None:
        for i in range(n):
            await q.put(i, timeout=30)

    asyncio.run(main())


def consume_all(q: ProcessQueue[int], out: ProcessQueue[int]) -> None:
    total = sum(q.sync)  # until shut down and drained
    out.sync.put(total)


def consume_and_mark_done(q: ProcessQueue[int]) -> None:
    for _ in q.sync:
        q.sync.task_done()


def hold_the_lock(q: ProcessQueue[int], ready: ProcessQueue[int]) -> None:
    q._lock()  # and never let go: tell the parent, then wait to be killed
    ready.sync.put(os.getpid())
    threading.Event().wait(60)


def put_and_report(q: ProcessQueue[int], report: ProcessQueue[int], base: int) -> None:
    for i in range(base, base + 100_000):
        q.sync.put(i)
        report.sync.put(i)


# -- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
async def test_child_producer_async_consumer(method):
    ctx = mp.get_context(method)
    with ProcessQueue(maxsize=16) as q:
        procs = [ctx.Process(target=produce, args=(q, k * 1000, 1000)) for k in range(3)]
        for p in procs:
            p.start()
        got = [await q.get(timeout=30) for _ in range(3000)]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        assert sorted(got) == list(range(3000))
        # each producer's own items arrive in its order
        assert [x for x in got if x < 1000] == list(range(1000))
        assert q.empty()
    assert leftovers(q.name) == []


@pytest.mark.parametrize("method", METHODS)
async def test_async_child_producer_and_sync_child_consumer(method):
    ctx = mp.get_context(method)
    with ProcessQueue(maxsize=8) as q, ProcessQueue() as out:
        consumer = ctx.Process(target=consume_all, args=(q, out))
        producer = ctx.Process(target=produce_async, args=(q, 2000))
        consumer.start()
        producer.start()
        producer.join(60)
        assert producer.exitcode == 0
        q.shutdown()  # seen by the consumer in the other process
        assert await out.get(timeout=30) == sum(range(2000))
        consumer.join(30)
        assert consumer.exitcode == 0


async def test_join_across_processes():
    ctx = mp.get_context("fork")
    with ProcessQueue() as q:
        await q.put_batch(range(500))
        worker = ctx.Process(target=consume_and_mark_done, args=(q,))
        worker.start()
        await asyncio.wait_for(q.join(), 30)
        assert q.statistics().unfinished_tasks == 0
        q.shutdown()
        worker.join(30)
        assert worker.exitcode == 0


def test_attach_by_name_from_an_unrelated_process():
    with ProcessQueue() as q:
        q.sync.put({"hello": "world"})
        code = textwrap.dedent(f"""
            from chute._process import ProcessQueue
            q = ProcessQueue.attach({q.name!r})
            item = q.sync.get(timeout=10)
            q.sync.put(item["hello"].upper())
            q.close()
        """)
        done = subprocess.run(
            [sys.executable, "-c", code], timeout=60, check=False, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert q.sync.get(timeout=10) == "WORLD"
        assert q.statistics().total_put == 2


def test_lifecycle_leaves_nothing_behind():
    q = ProcessQueue()
    name = q.name
    q.sync.put(1)
    other = ProcessQueue.attach(name)
    assert other.sync.get() == 1
    other.close()
    assert leftovers(name) != []  # the owner still has it
    q.close()
    assert leftovers(name) == []
    with pytest.raises(chute.ChuteError, match="no ProcessQueue named"):
        ProcessQueue.attach(name)
    with pytest.raises(chute.ChuteError, match="closed"):
        q.sync.put(2)


def test_unpicklable_item_is_refused_at_put():
    with ProcessQueue() as q:
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            q.sync.put(lambda: None)
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            q.put_nowait(threading.Lock())
        assert q.qsize() == 0
        assert q.statistics().total_put == 0


async def test_item_larger_than_the_ring_is_refused_naming_the_limit():
    with ProcessQueue(capacity=4096) as q:
        with pytest.raises(ValueError, match=r"pickles to \d+ bytes.*at most 4088"):
            await q.put(b"x" * 5000)
        with pytest.raises(ValueError, match="never fits"):
            await q.put_batch([b"x" * 1500] * 3)
        await q.put(b"y" * 4000)  # fits exactly once the ring is empty
        assert await q.get() == b"y" * 4000
        assert q.empty()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"maxsize": -1}, ValueError),
        ({"capacity": 100}, ValueError),
        ({"capacity": "big"}, TypeError),
        ({"name": "has space"}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        ProcessQueue(**kwargs)


def test_a_lock_held_by_a_killed_process_is_recovered():
    ctx = mp.get_context("fork")
    with ProcessQueue() as q, ProcessQueue() as ready:
        holder = ctx.Process(target=hold_the_lock, args=(q, ready))
        holder.start()
        pid = ready.sync.get(timeout=30)
        assert q._h[H_HOLDER] == pid  # it holds the lock now
        os.kill(pid, signal.SIGKILL)
        holder.join(30)
        q.sync.put("after")  # takes the lock over, repairs, goes on
        assert q.sync.get(timeout=10) == "after"


def test_producers_killed_at_random_points_lose_and_corrupt_nothing():
    ctx = mp.get_context("fork")
    import random

    rng = random.Random(7)
    with ProcessQueue(maxsize=64, capacity=8192) as q, ProcessQueue() as report:
        reported: set[int] = set()
        got: list[int] = []
        for round_ in range(12):
            p = ctx.Process(target=put_and_report, args=(q, report, round_ * 1_000_000))
            p.start()
            # let it run a random while, draining as we go, then kill it
            for _ in range(rng.randrange(50, 400)):
                got.append(q.sync.get(timeout=30))
            os.kill(p.pid, signal.SIGKILL)
            p.join(30)
            while True:
                try:
                    got.append(q.sync.get_nowait())
                except chute.QueueEmpty:
                    break
            while True:
                try:
                    reported.add(report.sync.get_nowait())
                except chute.QueueEmpty:
                    break
        assert len(got) == len(set(got)), "an item was delivered twice"
        assert reported <= set(got), "an item whose put returned was lost"
        assert len(reported) > 1000


def test_exported():
    assert chute.ProcessQueue is ProcessQueue
    assert "ProcessQueue" in chute.__all__


def get_and_report(q: ProcessQueue[int], report: ProcessQueue[int]) -> None:
    while True:
        report.sync.put(q.sync.get())


def test_consumers_killed_at_random_points_leave_a_working_queue():
    import random

    ctx = mp.get_context("fork")
    rng = random.Random(11)
    with ProcessQueue(maxsize=32, capacity=8192) as q, ProcessQueue() as report:
        seen: list[int] = []
        next_item = 0
        for _round in range(10):
            consumers = [ctx.Process(target=get_and_report, args=(q, report)) for _ in range(2)]
            for c in consumers:
                c.start()
            for _ in range(rng.randrange(20, 200)):
                q.sync.put(next_item, timeout=30)
                next_item += 1
            for c in consumers:
                os.kill(c.pid, signal.SIGKILL)
                c.join(30)
            seen += report.sync.get_batch(10_000, timeout=0) if report.qsize() else []
            # The queue still works for everyone left, and fast: the dead
            # consumers' bells are swept, not scanned for ever.
            q.sync.put(-1, timeout=10)
            while True:
                try:
                    item = q.sync.get_nowait()
                except chute.QueueEmpty:
                    break
                if item != -1:
                    seen.append(item)
        assert len(seen) == len(set(seen)), "an item was delivered twice"
        assert q.statistics().getters_waiting == 0


def reserve_and_die(q: ProcessQueue[int], ready: ProcessQueue[int], n: int) -> None:
    jobs = [q.sync.reserve().__enter__() for _ in range(n)]  # held, never settled
    ready.sync.put([j.item for j in jobs])
    threading.Event().wait(60)  # until killed


@pytest.mark.parametrize("method", METHODS)
async def test_items_reserved_by_a_killed_process_are_delivered_again(method):
    ctx = mp.get_context(method)
    with ProcessQueue() as q, ProcessQueue() as ready:
        await q.put_batch(range(10))
        holder = ctx.Process(target=reserve_and_die, args=(q, ready, 4))
        holder.start()
        held = await ready.get(timeout=30)
        assert held == [0, 1, 2, 3]
        assert q.statistics().in_flight == 4
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
        # Whoever finds the queue idle gives back what the dead held.
        got = {}
        for _ in range(10):
            async with q.reserve(timeout=10) as job:
                got[job.item] = job.deliveries
        assert sorted(got) == list(range(10))
        assert {got[i] for i in held} == {2}  # handed out a second time
        assert {got[i] for i in range(4, 10)} == {1}
        s = q.statistics()
        assert (s.size, s.in_flight, s.unfinished_tasks) == (0, 0, 0)
        await asyncio.wait_for(q.join(), 10)
    assert leftovers(q.name) == []


def test_a_closing_process_gives_back_what_it_holds():
    with ProcessQueue() as q:
        q.sync.put("x")
        other = ProcessQueue.attach(q.name)
        job = other.sync.reserve().__enter__()
        assert job.item == "x"
        other.close()  # leaves without settling: the item goes back
        with q.sync.reserve(timeout=5) as again:
            assert (again.item, again.deliveries) == ("x", 2)


def produce_with_timeouts(q: ProcessQueue[int], report: ProcessQueue[int], base: int) -> None:
    import random

    rng = random.Random(base)
    ok = []
    for i in range(base, base + 1500):
        try:
            q.sync.put(i, timeout=rng.choice([None, 0, 0.0005, 0.002]))
        except chute.QueueFull:
            continue
        ok.append(i)
    report.sync.put(ok)


async def test_timeouts_and_cancellations_across_processes_lose_nothing():
    import random

    rng = random.Random(3)
    ctx = mp.get_context("fork")
    with ProcessQueue(maxsize=8) as q, ProcessQueue() as report:
        producers = [
            ctx.Process(target=produce_with_timeouts, args=(q, report, k * 10_000))
            for k in range(2)
        ]
        for p in producers:
            p.start()
        got: list[int] = []

        async def consume() -> None:
            while True:
                how = rng.randrange(4)
                try:
                    if how == 0:
                        got.append(await q.get(timeout=rng.choice([0, 0.0005, 0.002])))
                    elif how == 1:
                        got.append(await asyncio.wait_for(q.get(), 0.001))
                    elif how == 2:
                        task = asyncio.ensure_future(q.get())
                        for _ in range(rng.randrange(3)):
                            await asyncio.sleep(0)
                        task.cancel()
                        got.append(await task)
                    else:
                        async with q.reserve(timeout=0.002) as job:
                            if rng.random() < 0.3:
                                raise LookupError  # given back
                            got.append(job.item)
                except (TimeoutError, asyncio.CancelledError, LookupError):
                    pass
                except chute.QueueShutDown:
                    return

        def consume_in_thread() -> None:
            # A second waiter of its own (another bell): a ring that this one
            # takes and then gives up on by timing out must pass on.
            trng = random.Random(5)
            while True:
                try:
                    got.append(q.sync.get(timeout=trng.choice([0, 0.0005, 0.002])))
                except chute.QueueEmpty:
                    continue
                except chute.QueueShutDown:
                    return

        thread = threading.Thread(target=consume_in_thread)
        thread.start()
        consumer = asyncio.create_task(consume())
        put_ok = (await report.get(timeout=60)) + (await report.get(timeout=60))
        for p in producers:
            p.join(30)
        q.shutdown()
        await asyncio.wait_for(consumer, 60)
        await asyncio.to_thread(thread.join, 60)
        assert len(got) == len(set(got)), "an item was delivered twice"
        assert sorted(got) == sorted(put_ok), "an item whose put returned was lost"
        assert len(put_ok) > 500


async def test_an_item_whose_last_try_died_with_its_process_is_dead_lettered():
    ctx = mp.get_context("fork")
    with ProcessQueue(max_deliveries=1) as q, ProcessQueue() as ready:
        await q.put_batch(["poison", "fine"])
        holder = ctx.Process(target=reserve_and_die, args=(q, ready, 1))
        holder.start()
        assert await ready.get(timeout=30) == ["poison"]
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
        async with q.reserve(timeout=10) as job:
            assert job.item == "fine"
        await wait_until_dead_lettered(q)
        [dead] = q.dead_letters()
        assert (dead.item, dead.deliveries, dead.reason) == ("poison", 1, "lease expired")
        assert dead.error is None
        await asyncio.wait_for(q.join(), 10)  # a dead letter counts as done
        assert q.requeue_dead() == 1
        assert await q.get(timeout=5) == "poison"
        assert q.purge_dead() == []


async def wait_until_dead_lettered(q: ProcessQueue[object]) -> None:
    # The recovery runs when a process finds the queue idle with items out.
    for _ in range(200):
        if q.statistics().dead_lettered:
            return
        with contextlib.suppress(TimeoutError):
            await q.get(timeout=0.01)
    raise AssertionError("the dead process's item was never recovered")


# -- regressions found in review --------------------------------------------------------


DIED_AT_CELL = 7  # the exit code of a child that died where it was told to


class _DieAfterStoring:
    """Stands for q._h in a child: the process dies right after storing the
    given cell, as SIGKILL could at that instant."""

    def __init__(self, h, cell):
        self.h, self.cell = h, cell

    def __getitem__(self, i):
        return self.h[i]

    def __setitem__(self, i, v):
        self.h[i] = v
        if i == self.cell:
            os._exit(DIED_AT_CELL)


def run_until_it_dies(target, q, cell_name):
    """Run ``target(q, cell)`` in a fork child that dies right after storing the cell."""
    from chute._process import layout

    p = mp.get_context("fork").Process(target=target, args=(q, getattr(layout, cell_name)))
    p.start()
    p.join(30)
    assert p.exitcode == DIED_AT_CELL  # it stored that cell: not finished, not failed


def get_and_die_after(q, cell):
    q._h = _DieAfterStoring(q._h, cell)
    q.sync.get(timeout=5)


@pytest.mark.parametrize(
    ("cell", "a_taken"),
    [
        ("H_HOLDER", False),  # holding the head lock, nothing taken yet
        ("H_HEAD", True),  # "a" taken (the head moved), not yet counted
        ("H_TAKEN", True),
        ("H_TOTAL_GOT", True),
    ],
)
def test_a_getter_killed_while_emptying_the_ring_leaves_it_consistent(cell, a_taken):
    with ProcessQueue(capacity=4096) as q:
        q.sync.put("a")
        run_until_it_dies(get_and_die_after, q, cell)
        q.sync.put("b", timeout=10)  # takes the lock over if it was held, repairs
        got = []
        while True:
            try:
                got.append(q.sync.get_nowait())
            except chute.QueueEmpty:
                break
        assert got == (["b"] if a_taken else ["a", "b"])  # never garbage, never "b" lost


def put_and_die_after(q, cell):
    q._h = _DieAfterStoring(q._h, cell)
    q.sync.put("x", timeout=5)


@pytest.mark.parametrize(
    ("cell", "x_stored"),
    [
        ("H_TAIL_HOLDER", False),  # holding the tail lock, nothing written yet
        ("H_TAIL", True),  # the record published, not yet counted
        ("H_ADDED", True),
        ("H_UNFINISHED", True),
    ],
)
def test_a_putter_killed_while_storing_leaves_the_ring_consistent(cell, x_stored):
    with ProcessQueue(capacity=4096) as q:
        q.sync.put("a")
        run_until_it_dies(put_and_die_after, q, cell)
        q.sync.put("b", timeout=10)  # takes the tail lock over, repairs
        assert q.qsize() == (3 if x_stored else 2)
        got = [q.sync.get(timeout=10) for _ in range(q.qsize())]
        assert got == (["a", "x", "b"] if x_stored else ["a", "b"])
        assert q.qsize() == 0
        q.sync.put("c")  # and it goes on
        assert q.sync.get(timeout=10) == "c"


def hold_one_lock(q, which, ready):
    sem, cell = (q._sem, H_HOLDER) if which == "head" else (q._tail_sem, H_TAIL_HOLDER)
    sem.acquire()  # as a get (head) or a put (tail) would, then stop there
    q._h[cell] = os.getpid()
    ready.sync.put(os.getpid())
    threading.Event().wait(60)


@pytest.mark.skipif(not SPLIT_LOCKS, reason="this CPU may reorder stores: a put takes both locks")
@pytest.mark.parametrize("held", ["tail", "head"])
def test_a_put_and_a_get_do_not_wait_for_each_other(held):
    ctx = mp.get_context("fork")
    with ProcessQueue() as q, ProcessQueue() as ready:
        q.sync.put("stored before")
        holder = ctx.Process(target=hold_one_lock, args=(q, held, ready))
        holder.start()
        pid = ready.sync.get(timeout=30)
        if held == "tail":
            # A put is under way in another process: a get goes on without it.
            assert q.sync.get(timeout=0.1) == "stored before"
            assert q._h[H_TAIL_HOLDER] == pid  # still held: the get did not wait it out
        else:
            # A get is under way: a put goes on.
            q.sync.put("put meanwhile", timeout=0.1)
            assert q._h[H_HOLDER] == pid
        os.kill(pid, signal.SIGKILL)
        holder.join(30)
        # The dead holder's lock is taken over by the next call that needs it.
        if held == "tail":
            q.sync.put("put meanwhile", timeout=10)
            expected = ["put meanwhile"]
        else:
            expected = ["stored before", "put meanwhile"]
        assert [q.sync.get(timeout=10) for _ in expected] == expected
        assert q.qsize() == 0


def take_over_the_head_lock(q):
    q.sync.get_nowait()  # a dead getter's lock: taken over, then the tail lock is waited for


def test_a_repair_left_by_a_taker_killed_before_it_made_it_is_made_by_the_next():
    ctx = mp.get_context("fork")
    with ProcessQueue(capacity=4096) as q, ProcessQueue() as ready:
        for i in range(300):  # a lap and more: old records stay in the ring
            q.sync.put(i)
            assert q.sync.get() == i
        q.sync.put(300)
        getter = ctx.Process(target=get_and_die_after, args=(q, H_HEAD))
        getter.start()
        getter.join(30)  # it took 300, then died: the head moved, "taken" did not
        putter = ctx.Process(target=hold_one_lock, args=(q, "tail", ready))
        putter.start()
        putter_pid = ready.sync.get(timeout=30)
        taker = ctx.Process(target=take_over_the_head_lock, args=(q,))
        taker.start()
        deadline = time.monotonic() + 30
        while not (q._h[H_HOLDER] == taker.pid and q._h[H_REPAIR_DUE]):
            assert time.monotonic() < deadline, "the head lock was never taken over"
            time.sleep(0.01)
        os.kill(taker.pid, signal.SIGKILL)  # holding the head lock, not yet the tail's
        taker.join(30)
        os.kill(putter_pid, signal.SIGKILL)
        putter.join(30)
        with pytest.raises(chute.QueueEmpty):
            q.sync.get(timeout=1)  # not 300 again, nor an old record of the last lap
        assert q.qsize() == 0
        q.sync.put("after")
        assert q.sync.get(timeout=10) == "after"


def test_a_large_item_given_back_to_an_emptied_ring_fits():
    with ProcessQueue(capacity=8192) as q:
        big = b"B" * 5000  # over half the ring: it fits only from the ring's start
        q.sync.put(big)
        job = q.sync.reserve(timeout=1).__enter__()
        q.sync.put(b"s" * 3500)  # the ring empties with its tail half way
        assert q.sync.get(timeout=1) == b"s" * 3500
        job.nack()
        assert q.sync.get(timeout=1) == big


def test_a_large_dead_letter_requeued_to_an_emptied_ring_fits():
    with ProcessQueue(capacity=8192, max_deliveries=1) as q:
        big = b"B" * 5000
        q.sync.put(big)
        with q.sync.reserve(timeout=1) as job:
            job.nack()  # its last delivery: a dead letter
        q.sync.put(b"s" * 3500)
        assert q.sync.get(timeout=1) == b"s" * 3500
        assert q.requeue_dead() == 1
        assert q.sync.get(timeout=1) == big


def lock_and_wait(q, ready):
    q._lock()
    ready.sync.put(os.getpid())
    threading.Event().wait(60)


def test_a_killed_lock_holder_not_yet_reaped_is_taken_over():
    ctx = mp.get_context("fork")
    with ProcessQueue() as q, ProcessQueue() as ready:
        p = ctx.Process(target=lock_and_wait, args=(q, ready))
        p.start()
        pid = ready.sync.get(timeout=30)
        os.kill(pid, signal.SIGKILL)  # a zombie until joined: no join before the put
        q.sync.put("x", timeout=10)
        assert q.sync.get(timeout=10) == "x"
        p.join(30)


def test_a_closing_holder_rings_the_waiting_getter():
    with ProcessQueue() as q:
        q.sync.put("x")
        other = ProcessQueue.attach(q.name)
        other.sync.reserve().__enter__()
        got = []
        t = threading.Thread(target=lambda: got.append(q.sync.get(timeout=10)))
        t.start()
        for _ in range(1000):
            if q.statistics().getters_waiting:
                break
            threading.Event().wait(0.005)
        else:
            pytest.fail("the getter never waited")
        other.close()  # gives "x" back, and rings the sleeping getter
        t.join(5)
        assert got == ["x"]


async def test_a_sleeping_getter_recovers_what_a_dead_holder_held():
    ctx = mp.get_context("fork")
    with ProcessQueue() as q, ProcessQueue() as ready:
        await q.put("x")
        holder = ctx.Process(target=reserve_and_die, args=(q, ready, 1))
        holder.start()
        assert await ready.get(timeout=30) == ["x"]
        getter = asyncio.ensure_future(q.get(timeout=20))
        await wait_until(lambda: q.statistics().getters_waiting == 1)  # asleep before the death
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
        assert await asyncio.wait_for(getter, 10) == "x"


def _refuse_to_rebuild():
    raise RuntimeError("cannot rebuild here")


class Bomb:
    def __reduce__(self):
        return (_refuse_to_rebuild, ())


async def test_an_item_that_cannot_be_unpickled_loses_nothing_else():
    with ProcessQueue() as q:
        await q.put_batch([1, 2, Bomb(), 4])
        with pytest.raises(chute.ChuteError, match="moved to the dead letters"):
            await q.get_batch(10)
        assert await q.get_batch(10) == [1, 2, 4]
        assert q.statistics().dead_lettered == 1


def test_sync_put_batch_that_can_never_fit_is_refused_at_once():
    with ProcessQueue(maxsize=2) as q:
        with pytest.raises(ValueError, match="can never fit"):
            q.sync.put_batch([1, 2, 3], timeout=5)
        assert q.qsize() == 0


def reserve_on_two_handles_and_die(name: str, ready: ProcessQueue[int]) -> None:
    a = ProcessQueue.attach(name)
    b = ProcessQueue.attach(name)
    held = [a.sync.reserve().__enter__().item, b.sync.reserve().__enter__().item]
    ready.sync.put(held)
    threading.Event().wait(60)


def test_two_handles_in_one_dying_process_lose_nothing():
    ctx = mp.get_context("fork")
    with ProcessQueue() as q, ProcessQueue() as ready:
        q.sync.put_batch(["A", "B", "C"])
        p = ctx.Process(target=reserve_on_two_handles_and_die, args=(q.name, ready))
        p.start()
        assert sorted(ready.sync.get(timeout=30)) == ["A", "B"]
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        got = sorted(q.sync.get(timeout=10) for _ in range(3))
        assert got == ["A", "B", "C"]
        assert q.statistics().in_flight == 0


def test_bells_of_ended_loops_and_threads_are_given_back():
    import gc

    async def wait_briefly(q: ProcessQueue[int]) -> None:
        with contextlib.suppress(TimeoutError):
            await q.get(timeout=0.001)

    def wait_in_thread(q: ProcessQueue[int]) -> None:
        with contextlib.suppress(chute.QueueEmpty):
            q.sync.get(timeout=0.001)

    with ProcessQueue() as q:
        for i in range(300):  # more than the 256 rows of the bell table
            asyncio.run(wait_briefly(q))
            t = threading.Thread(target=wait_in_thread, args=(q,))
            t.start()
            t.join(10)
            if i % 50 == 0:
                gc.collect()
        gc.collect()
        q.sync.put(1)  # an unlock: frees what was retired
        bells = glob.glob(os.path.join(_shm_dir(), f"chute-{q.name}.*.bell"))
        assert len(bells) < 120


def test_room_for_one_wakes_the_single_putter_behind_a_batch():
    with ProcessQueue(maxsize=2) as q:
        q.sync.put_batch(["a", "b"])
        done = {}

        def single() -> None:
            q.sync.put("z", timeout=10)
            done["single"] = True

        def batch() -> None:
            with contextlib.suppress(chute.QueueFull):
                q.sync.put_batch(["x", "y"], timeout=3)

        threads = [threading.Thread(target=single), threading.Thread(target=batch)]
        for t in threads:
            t.start()
        for _ in range(2000):
            if q.statistics().putters_waiting == 2:
                break
            threading.Event().wait(0.005)
        else:
            pytest.fail("the two putters never waited")
        assert q.sync.get() == "a"  # room for one: the batch cannot use it, the single can
        threads[0].join(5)
        assert done == {"single": True}
        threads[1].join(10)


async def test_a_reserved_item_that_cannot_be_unpickled_is_dead_lettered():
    with ProcessQueue() as q:
        await q.put_batch([Bomb(), "fine"])
        with pytest.raises(chute.ChuteError, match="moved to the dead letters"):
            await q.reserve()
        async with q.reserve(timeout=5) as job:  # the queue goes on
            assert job.item == "fine"
        s = q.statistics()
        assert (s.dead_lettered, s.in_flight, s.unfinished_tasks) == (1, 0, 0)
        [dead] = q.dead_letters()  # cannot be unpickled here: its pickle is shown
        assert dead.reason == "undecodable"
        assert isinstance(dead.item, bytes)
        with pytest.raises(RuntimeError, match="cannot rebuild"):
            pickle.loads(dead.item)
        assert q.statistics().dead_lettered == 1
        assert q.requeue_dead() == 1  # raw, no unpickling needed


def own_a_queue(report: Any) -> None:
    q: ProcessQueue[int] = ProcessQueue()
    q.sync.put(1)
    report.put(q.name)
    time.sleep(60)  # until killed


@pytest.mark.parametrize("method", METHODS)
def test_the_last_live_process_removes_a_queue_whose_owner_was_killed(method):
    ctx = mp.get_context(method)
    report = ctx.SimpleQueue()
    owner = ctx.Process(target=own_a_queue, args=(report,))
    owner.start()
    try:
        name = report.get()
        first = ProcessQueue.attach(name)
        second = ProcessQueue.attach(name)
    finally:
        owner.kill()
        owner.join(30)
    assert first.sync.get(timeout=10) == 1
    first.close()
    assert leftovers(name) != []  # `second` is still attached
    second.close()  # the last one alive: the dead owner does not count
    assert leftovers(name) == []
    with pytest.raises(chute.ChuteError, match="no ProcessQueue named"):
        ProcessQueue.attach(name)


def test_a_lock_leaked_by_an_escaped_exception_is_taken_back():
    # As when a signal handler raises (Ctrl-C, a test timeout) just after
    # the lock was taken: the thread leaves without letting go of it.
    with ProcessQueue() as q:
        q._lock()
        q.sync.put("after")  # the same thread again: it does not wait for itself
        assert q.sync.get(timeout=10) == "after"


def test_a_failed_attach_does_not_spoil_fork_children():
    # A handle half made by a failed attach must not stop a fork child from
    # taking the queues it inherits as its own (it would act as its parent).
    failures = []  # their tracebacks keep the half-made handles alive
    for _ in range(20):
        with pytest.raises(chute.ChuteError) as failed:
            ProcessQueue.attach("no-such-queue")
        failures.append(failed)
    ctx = mp.get_context("fork")
    with ProcessQueue() as q, ProcessQueue() as ready:
        holder = ctx.Process(target=hold_the_lock, args=(q, ready))
        holder.start()
        pid = ready.sync.get(timeout=30)
        assert q._h[H_HOLDER] == pid  # the child's own pid, not ours
        os.kill(pid, signal.SIGKILL)
        holder.join(30)
        q.sync.put("after")
        assert q.sync.get(timeout=10) == "after"
