"""q.sync is a drop-in for queue.Queue, used from plain threads."""

from __future__ import annotations

import queue
import threading

import pytest

import chute

pytestmark = pytest.mark.timeout(30)


def run_thread(target, *args):
    t = threading.Thread(target=target, args=args)
    t.start()
    return t


def wait_stats(q, predicate, timeout=10.0):
    """Block until the queue's statistics satisfy ``predicate`` (an ordering step)."""
    done = threading.Event()
    for _ in range(int(timeout / 0.001)):
        if predicate(q.statistics()):
            return
        done.wait(0.001)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize("cls", [queue.Queue, lambda n=0: chute.Queue(n).sync])
def test_same_behaviour_as_queue_queue(cls):
    # One script, run against queue.Queue and chute's face: same results.
    q = cls(2)
    q.put(1)
    q.put(2, block=False)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    assert (q.qsize(), q.full(), q.empty(), q.maxsize) == (2, True, False, 2)
    assert q.get() == 1
    assert q.get(block=False) == 2
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait(5)
    q.get()
    q.task_done()
    q.task_done()
    q.task_done()
    q.join()
    with pytest.raises(ValueError):
        q.task_done()


def test_threads_producer_consumer_with_join():
    q = chute.Queue(4).sync
    out = []

    def consumer():
        for item in q:
            out.append(item)
            q.task_done()

    consumers = [run_thread(consumer) for _ in range(3)]
    for i in range(500):
        q.put(i)
    q.join()
    q.shutdown()
    for t in consumers:
        t.join(10)
    assert sorted(out) == list(range(500))


def test_blocked_thread_get_is_woken_by_put():
    q = chute.Queue()
    result = []
    t = run_thread(lambda: result.append(q.sync.get(timeout=10)))
    wait_stats(q, lambda s: s.getters_waiting == 1)
    q.sync.put("x")
    t.join(10)
    assert result == ["x"]


def test_blocked_thread_put_times_out_and_enqueues_nothing():
    q = chute.Queue(1)
    q.sync.put("kept")
    with pytest.raises(chute.QueueFull):
        q.sync.put("refused", timeout=0.02)
    assert q.sync.get_nowait() == "kept"
    assert q.empty()


def test_shutdown_wakes_blocked_threads():
    q = chute.Queue(1)
    q.sync.put(0)
    errors = []

    def blocked(fn):
        try:
            fn()
        except chute.QueueShutDown as e:
            errors.append(e)

    putter = run_thread(blocked, lambda: q.sync.put(1))
    wait_stats(q, lambda s: s.putters_waiting == 1)
    assert q.sync.shutdown(immediate=True) == [0]
    putter.join(10)
    assert len(errors) == 1
    assert errors[0].item == 1
    getter = run_thread(blocked, q.sync.get)
    getter.join(10)
    assert len(errors) == 2


def test_iteration_stops_after_shutdown_and_drain():
    q = chute.Queue().sync
    for i in range(3):
        q.put(i)
    q.shutdown()
    assert list(q) == [0, 1, 2]


def test_sync_batches_and_reserve():
    q = chute.Queue(max_deliveries=3).sync
    q.put_batch(["a", "b", "c"])
    assert q.get_batch(2) == ["a", "b"]
    with pytest.raises(KeyError), q.reserve() as job:
        assert job.item == "c"
        raise KeyError
    with q.reserve(timeout=1) as job:
        assert (job.item, job.deliveries) == ("c", 2)
    assert q.statistics().unfinished_tasks == 2  # a and b were got, not done
    with pytest.raises(chute.QueueEmpty), q.reserve(block=False):
        pass


def test_bad_timeout_in_sync_face():
    q = chute.Queue().sync
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        q.put(1, timeout="soon")
    assert q.qsize() == 0


async def test_blocking_call_on_a_loop_thread_is_refused():
    q = chute.Queue()
    with pytest.raises(RuntimeError, match="block the running event loop"):
        q.sync.get()
    with pytest.raises(RuntimeError, match="block the running event loop"):
        q.sync.get(timeout=1)
    q.sync.put(1)  # never blocks: allowed
    assert q.sync.get() == 1  # an item is there: does not block either
