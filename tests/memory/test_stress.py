"""Every put that returned is got exactly once, whatever cancels or times out.

Two event loops (in two threads) and two plain threads hammer one small
queue with every kind of put and get: native timeouts, ``asyncio.wait_for``,
``asyncio.timeout``, ``task.cancel()`` at random points, batches, nowait
forms, and reservations that fail and give their item back. Then the queue
is shut down and drained, and every item is counted.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter

import pytest

import chute
from tests.conftest import LOOPS, loop_factory

pytestmark = pytest.mark.timeout(120)

PER_PRODUCER = 3000
TASKS_PER_LOOP = 3


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.put: list[object] = []
        self.got: list[object] = []
        self.producers_left = 0
        self.all_put = threading.Event()

    def record_put(self, items):
        with self.lock:
            self.put.extend(items)

    def record_got(self, items):
        with self.lock:
            self.got.extend(items)

    def producer_done(self):
        with self.lock:
            self.producers_left -= 1
            if self.producers_left == 0:
                self.all_put.set()


def tiny(rng):
    return rng.choice([0, 0.00005, 0.0002, 0.001])


async def async_producer(q, ledger, name, rng):
    for seq in range(PER_PRODUCER):
        item = (name, seq)
        how = rng.randrange(6)
        try:
            if how == 0:
                await q.put(item)
            elif how == 1:
                await q.put(item, timeout=tiny(rng))
            elif how == 2:
                await asyncio.wait_for(q.put(item), tiny(rng))
            elif how == 3:
                async with asyncio.timeout(tiny(rng)):
                    await q.put(item)
            elif how == 4:
                task = asyncio.ensure_future(q.put(item))
                for _ in range(rng.randrange(3)):
                    await asyncio.sleep(0)
                task.cancel()
                await task
            else:
                batch = [(name, seq, k) for k in range(rng.randrange(1, 4))]
                await q.put_batch(batch, timeout=tiny(rng))
                ledger.record_put(batch)
                continue
        except (TimeoutError, asyncio.CancelledError):
            continue
        ledger.record_put([item])
    ledger.producer_done()


async def async_consumer(q, ledger, rng):
    while True:
        how = rng.randrange(7)
        try:
            if how == 0:
                got = [await q.get()]
            elif how == 1:
                got = [await q.get(timeout=tiny(rng))]
            elif how == 2:
                got = [await asyncio.wait_for(q.get(), tiny(rng))]
            elif how == 3:
                async with asyncio.timeout(tiny(rng)):
                    got = [await q.get()]
            elif how == 4:
                task = asyncio.ensure_future(q.get())
                for _ in range(rng.randrange(3)):
                    await asyncio.sleep(0)
                task.cancel()
                got = [await task]
            elif how == 5:
                got = await q.get_batch(rng.randrange(1, 5), timeout=tiny(rng))
            else:
                fail = rng.random() < 0.3
                try:
                    async with q.reserve(timeout=tiny(rng)) as job:
                        if fail:
                            raise LookupError  # gives the item back
                        got = [job.item]
                except LookupError:
                    continue
        except (TimeoutError, asyncio.CancelledError):
            continue
        except chute.QueueShutDown:
            return
        ledger.record_got(got)


def thread_producer(q, ledger, name, rng):
    for seq in range(PER_PRODUCER):
        item = (name, seq)
        try:
            if rng.random() < 0.2:
                q.sync.put_nowait(item)
            else:
                q.sync.put(item, timeout=rng.choice([None, 0.0001, 0.001]))
        except chute.QueueFull:
            continue
        ledger.record_put([item])
    ledger.producer_done()


def thread_consumer(q, ledger, rng):
    while True:
        try:
            r = rng.random()
            if r < 0.2:
                got = [q.sync.get_nowait()]
            elif r < 0.4:
                got = q.sync.get_batch(3, timeout=0.001)
            else:
                got = [q.sync.get(timeout=rng.choice([None, 0.0001, 0.001]))]
        except chute.QueueEmpty:
            continue
        except chute.QueueShutDown:
            return
        ledger.record_got(got)


def run_loop_actor(q, ledger, name, kind, seed):
    async def main():
        rng = random.Random(seed)
        await asyncio.gather(
            *(
                async_producer(q, ledger, f"{name}-p{i}", random.Random(rng.random()))
                for i in range(TASKS_PER_LOOP)
            ),
            *(
                async_consumer(q, ledger, random.Random(rng.random()))
                for _ in range(TASKS_PER_LOOP)
            ),
        )

    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        runner.run(main())


@pytest.mark.parametrize("seed", [1, 2])
def test_no_item_lost_or_duplicated(seed):
    q: chute.Queue[object] = chute.Queue(maxsize=8)
    ledger = Ledger()
    ledger.producers_left = 2 * TASKS_PER_LOOP + 2
    rng = random.Random(seed)
    threads = [
        threading.Thread(target=run_loop_actor, args=(q, ledger, "loopA", LOOPS[0], rng.random())),
        threading.Thread(target=run_loop_actor, args=(q, ledger, "loopB", LOOPS[-1], rng.random())),
        threading.Thread(target=thread_producer, args=(q, ledger, "thrC", random.Random(seed))),
        threading.Thread(target=thread_consumer, args=(q, ledger, random.Random(seed + 1))),
        threading.Thread(target=thread_consumer, args=(q, ledger, random.Random(seed + 2))),
        threading.Thread(target=thread_producer, args=(q, ledger, "thrD", random.Random(seed + 3))),
    ]
    for t in threads:
        t.start()
    assert ledger.all_put.wait(90), "producers did not finish"
    q.shutdown()
    for t in threads:
        t.join(30)
        assert not t.is_alive()

    counts = Counter(ledger.got)
    duplicated = {item: n for item, n in counts.items() if n > 1}
    lost = set(ledger.put) - set(counts)
    phantom = set(counts) - set(ledger.put)
    assert not duplicated, f"duplicated: {list(duplicated)[:5]}"
    assert not lost, f"lost: {sorted(lost)[:5]}"
    assert not phantom, f"got but never put: {list(phantom)[:5]}"
    assert len(ledger.put) > 5000  # the run really moved thousands of items
    s = q.statistics()
    assert (s.size, s.in_flight, s.getters_waiting, s.putters_waiting) == (0, 0, 0, 0)
    assert s.total_put == len(ledger.put)
