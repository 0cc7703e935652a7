"""``python -m chute``: a short tour that moves items between tasks, threads and loops."""

from __future__ import annotations

import asyncio
import threading
import time

from .._exceptions import QueueShutDown
from .._memory import Queue


def _thread_producer(q: Queue[str], n: int) -> None:
    # A plain thread: the blocking queue.Queue face, no event loop needed.
    for i in range(n):
        q.sync.put(f"thread-job-{i}")


def _other_loop_producer(q: Queue[str], n: int) -> None:
    # A second event loop in its own thread: the same async face.
    async def produce() -> None:
        for i in range(n):
            await q.put(f"loop2-job-{i}", timeout=5)

    asyncio.run(produce())


async def _tour(n: int = 20) -> None:
    q: Queue[str] = Queue(maxsize=8)
    done: dict[str, int] = {}
    failed_once: set[str] = set()

    async def worker(name: str) -> None:
        while True:
            try:
                async with q.reserve() as job:
                    if job.item.endswith("-7") and job.item not in failed_once:
                        failed_once.add(job.item)
                        raise RuntimeError("flaky handler")  # goes back to the queue
                    await asyncio.sleep(0.001)  # "work"
                    done[name] = done.get(name, 0) + 1
                    if job.deliveries > 1:
                        print(f"  {name}: {job.item} succeeded on delivery {job.deliveries}")
            except RuntimeError:
                print(f"  {name}: {job.item} failed, given back to the queue")
            except QueueShutDown:
                return

    started = time.perf_counter()
    print(f"chute tour: 3 producers, 3 consumer tasks, one queue of maxsize {q.maxsize}")
    workers = [asyncio.create_task(worker(f"task-{i}")) for i in range(3)]
    threads = [
        threading.Thread(target=_thread_producer, args=(q, n)),
        threading.Thread(target=_other_loop_producer, args=(q, n)),
    ]
    for t in threads:
        t.start()
    for i in range(n):  # and this loop produces too
        await q.put(f"main-job-{i}")
    for t in threads:
        await asyncio.to_thread(t.join)
    await q.join()  # every item acknowledged
    q.shutdown()
    await asyncio.gather(*workers)
    s = q.statistics()
    took = time.perf_counter() - started
    print(
        f"processed {sum(done.values())} items in {took:.2f}s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(done.items()))
    )
    lost = s.total_put - sum(done.values())
    print(
        f"put {s.total_put}, handed out {s.total_got} (retries included), "
        f"peak depth {s.peak_size}/{s.maxsize}, lost {lost}"
    )


def main() -> None:
    asyncio.run(_tour())
