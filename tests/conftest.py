"""Test harness: every ``async def`` test runs once per event loop kind.

A tiny runner instead of a plugin dependency: each coroutine test gets a
fresh loop (the default one, and uvloop where it is installed), a hard
timeout so that a hang fails instead of stalling the run, and its async
fixtures closed (``aclose()``) on the same loop afterwards.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Callable
from typing import Any

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra on POSIX
    uvloop = None

# The command's tests run chute in subprocesses: they import src/ too.
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)

LOOPS = ["asyncio"] + (["uvloop"] if uvloop is not None else [])
ASYNC_TEST_TIMEOUT = float(os.environ.get("CHUTE_TEST_TIMEOUT", "60"))


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if kind == "uvloop":
        assert uvloop is not None
        return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if inspect.iscoroutinefunction(metafunc.function):
        metafunc.fixturenames.append("loop_kind")
        marker = metafunc.definition.get_closest_marker("loops")
        kinds = [k for k in LOOPS if marker is None or k in marker.args]
        metafunc.parametrize("loop_kind", kinds)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    kind = pyfuncitem.callspec.params["loop_kind"]
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def run() -> None:
        async with asyncio.timeout(ASYNC_TEST_TIMEOUT):  # the teardown too
            try:
                await func(**kwargs)
            finally:
                for value in kwargs.values():
                    aclose = getattr(value, "aclose", None)
                    if aclose is not None and inspect.iscoroutinefunction(aclose):
                        await aclose()

    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        runner.run(run())
    return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "loops(*kinds): run an async test only on these loops")


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    """Yield to the loop until ``predicate()`` holds: an explicit ordering step.

    It first gives other tasks every chance with ``sleep(0)``; it only
    sleeps for real when the other side runs elsewhere (a thread).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    spins = 0
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s")
        spins += 1
        await asyncio.sleep(0 if spins < 100 else 0.001)


# -- waiting for calls to be answered ------------------------------------------------
#
# A durable queue answers on another thread (SQLite) or from a server (Redis),
# so one ``sleep(0)`` is too short for a task that is meant to stay blocked to
# have had its chance to go wrong: a ``join()`` that returns while a task is
# unfinished needs a round trip to do so, and would still look "not done yet"
# after it.

#: Loop turns that run any chain of wake-ups which stays within the loop
#: (a future set, the task woken, its next call sent) to its end.
LOOP_TURNS = 20
#: Round trips in a row: a task woken by the answer to one of its calls may
#: make another call before it settles (a join reads again after a wake-up).
ROUND_TRIPS = 3


async def _turns() -> None:
    for _ in range(LOOP_TURNS):
        await asyncio.sleep(0)


async def _round_trip(q: Any) -> None:
    astatistics = getattr(q, "astatistics", None)
    if astatistics is not None:
        await astatistics()
    else:
        # On the loop, but after the other tasks' calls: the database thread
        # answers in order, and the server has their commands first.
        q.statistics()


async def calls_answered(q: Any) -> None:
    """Return once the calls other tasks had started on ``q`` were answered
    and those tasks ran on: after it, a task still pending is blocked.

    Each of our round trips starts after the other tasks' calls were sent,
    so it is answered after them; a task that makes a further call gets
    another round. In-process queues answer at once: the loop turns are
    what they need. The ordering step for "not done yet" checks, instead of
    a sleep of a guessed length.
    """
    await _turns()
    for _ in range(ROUND_TRIPS):
        await _round_trip(q)
        await _turns()
