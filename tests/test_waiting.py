"""The stored queues' lines of waiters (``chute._durable.waiting.Hub``): who
is woken, and who only learns when to look, as getters come and go.

The timer of a getter that leaves (it saw a lease or delay that will run
out, and was to look then) goes on to the next in line. Known and still to
come, it is handed on without a ring: the next getter sleeps on until then
instead of looking at once for nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from chute._durable.waiting import Hub, Wait

pytestmark = pytest.mark.timeout(10)


def _in_line(hub: Hub, n: int, *, in_thread: bool = False) -> list:
    return [hub.add(Wait.GET, in_thread=in_thread) for _ in range(n)]


async def test_a_timer_still_to_come_is_handed_on_without_a_ring() -> None:
    hub = Hub()
    leaving, next_ = _in_line(hub, 2)
    due = time.time() + 60
    leaving.due = due
    hub.remove(leaving, timer=True)
    assert not next_.woken  # not rung: nothing new to take
    assert next_.future.done()  # woken only to sleep again, until the timer
    assert next_.due == due
    assert hub.hold(next_)  # sleeps on
    assert not next_.future.done()
    assert hub.idle(Wait.GET)  # still a getter that found nothing: others line up
    # When it looks (its sleep ended), the timer is its own, to pass on in turn.
    assert hub.rearm(next_) is True
    assert next_.due == due


async def test_a_getter_sleeping_on_a_handed_timer_is_still_rung_for_an_item() -> None:
    hub = Hub()
    leaving, next_ = _in_line(hub, 2)
    leaving.due = time.time() + 60
    hub.remove(leaving, timer=True)
    hub.ring({Wait.GET: 1})
    assert next_.woken
    assert not hub.hold(next_)  # rung: it looks now


async def test_a_ring_after_the_hand_on_is_not_lost_by_the_sleep_that_follows() -> None:
    hub = Hub()
    leaving, next_ = _in_line(hub, 2)
    leaving.due = time.time() + 60
    hub.remove(leaving, timer=True)
    assert hub.hold(next_)  # sleeps on, on a new future...
    hub.ring({Wait.GET: 1})  # ...which the ring wakes
    assert next_.woken
    assert next_.future.done()


async def test_a_timer_that_ran_out_is_passed_on_as_a_ring() -> None:
    hub = Hub()
    leaving, next_ = _in_line(hub, 2)
    leaving.due = time.time() - 1
    hub.remove(leaving, timer=True)
    assert next_.woken
    assert next_.timed
    assert not hub.hold(next_)


async def test_a_timer_of_unknown_moment_is_passed_on_as_a_ring() -> None:
    hub = Hub()
    leaving, next_ = _in_line(hub, 2)
    hub.remove(leaving, timer=True)
    assert next_.woken
    assert next_.timed


async def test_a_timer_is_not_passed_to_a_line_that_wakes_as_soon() -> None:
    hub = Hub()
    leaving, other, last = _in_line(hub, 3)
    leaving.due = time.time() + 60
    other.due = leaving.due - 1
    hub.remove(leaving, timer=True)
    assert not any(w.woken or w.future.done() for w in (other, last))


async def test_a_spare_ring_goes_on_with_the_timer_and_its_moment() -> None:
    # The leaver was rung while it took another item: the ring may be for
    # an item still there, so the next one looks, and holds the timer after.
    hub = Hub()
    leaving, next_ = _in_line(hub, 2)
    due = time.time() + 60
    leaving.due = due
    hub.ring({Wait.GET: 1})
    hub.remove(leaving, timer=True)
    assert next_.woken
    assert next_.timed
    assert hub.rearm(next_) is True
    assert next_.due == due


def test_a_thread_handed_a_timer_sleeps_on_until_it() -> None:
    hub = Hub()
    leaving, next_ = _in_line(hub, 2, in_thread=True)
    leaving.due = time.time() + 60
    woke = threading.Event()

    def sleeper() -> None:
        next_.block(None)
        woke.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    hub.remove(leaving, timer=True)
    assert woke.wait(5)
    thread.join(5)
    assert hub.hold(next_)
    assert not next_.event.is_set()


async def test_a_ring_from_its_own_loop_wakes_a_task_at_once_and_from_a_thread_too() -> None:
    hub = Hub()
    here, there = _in_line(hub, 2)
    hub.ring({Wait.GET: 1})
    assert here.future.done()  # no turn of the loop needed
    await asyncio.to_thread(hub.ring, {Wait.GET: 1})
    await asyncio.wait_for(there.future, 5)
