"""The other side of a contract test, in another process.

``PeerQueue`` wraps a ``ProcessQueue``: the producing calls (``put``,
``put_nowait``, ``put_batch``) and ``shutdown`` run in a peer process
attached to the same queue; everything else (gets, reservations,
``task_done``/``join``, sizes, statistics) runs in the test's process. So
every item of a contract test crosses from one process to another, and
every wake-up the test waits for is rung by the other process.

The peer runs each call as a task on its own event loop. Cancelling a
call in the test cancels that task in the peer and waits for the outcome,
so when the test goes on, the peer has finished with the call either way;
a call that completed before the cancel reached it returns its result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import itertools
import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

#: Calls that run in the peer process.
REMOTE = frozenset({"put", "put_nowait", "put_batch", "shutdown"})
#: How long a test waits for the peer to answer a call that does not block.
ANSWER_TIMEOUT = 10.0


def serve(q: Any, conn: Connection) -> None:
    """The peer process: run the calls that arrive on ``conn`` against ``q``."""
    try:
        asyncio.run(_serve(q, conn))
    finally:
        q.close()


async def _call(q: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = getattr(q, name)(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _serve(q: Any, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    tasks: dict[int, asyncio.Task[Any]] = {}
    ended = loop.create_future()

    def answer(ident: int, task: asyncio.Task[Any]) -> None:
        del tasks[ident]
        if task.cancelled():
            message: tuple[str, int, Any] = ("cancelled", ident, None)
        elif (exc := task.exception()) is not None:
            message = ("raised", ident, exc)
        else:
            message = ("returned", ident, task.result())
        try:
            conn.send(message)
        except Exception as exc:  # an answer that cannot be pickled
            conn.send(("raised", ident, RuntimeError(f"peer could not send its answer: {exc!r}")))

    def readable() -> None:
        try:
            op, ident, *rest = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            if not ended.done():
                ended.set_result(None)
            return
        if op == "call":
            name, args, kwargs = rest
            task = loop.create_task(_call(q, name, args, kwargs))
            tasks[ident] = task
            task.add_done_callback(functools.partial(answer, ident))
        elif op == "cancel" and ident in tasks:
            tasks[ident].cancel()
        elif op == "stop" and not ended.done():
            ended.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    await ended
    loop.remove_reader(conn.fileno())
    for task in list(tasks.values()):
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)


class PeerQueue:
    """A ``ProcessQueue`` whose producing side runs in another process."""

    def __init__(self, q: Any) -> None:
        self._q = q
        ctx = multiprocessing.get_context("forkserver")
        self._conn, theirs = ctx.Pipe()
        self._process = ctx.Process(target=serve, args=(q, theirs), daemon=True)
        self._process.start()
        theirs.close()
        self._ids = itertools.count()
        self._pending: dict[int, concurrent.futures.Future[Any]] = {}
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __getattr__(self, name: str) -> Any:
        if name in REMOTE:
            if inspect.iscoroutinefunction(getattr(type(self._q), name)):
                return functools.partial(self._remote, name)
            return functools.partial(self._remote_now, name)
        return getattr(self._q, name)

    def __aiter__(self) -> Any:
        return self._q.__aiter__()

    # Assigned here, in the consuming process: the bound lives in the shared
    # header, so the peer's waiting putters must see it from there.
    @property
    def maxsize(self) -> int:
        return self._q.maxsize  # type: ignore[no-any-return]

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        self._q.maxsize = value

    def _read(self) -> None:
        while True:
            try:
                op, ident, value = self._conn.recv()
            except (EOFError, OSError):
                break
            fut = self._pending.pop(ident)
            if op == "returned":
                fut.set_result(value)
            elif op == "raised":
                fut.set_exception(value)
            else:
                fut.set_exception(asyncio.CancelledError())
        for fut in self._pending.values():
            fut.set_exception(RuntimeError("the peer process ended"))

    def _start(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, Any]:
        ident = next(self._ids)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._pending[ident] = fut
        with self._send_lock:
            try:
                self._conn.send(("call", ident, name, args, kwargs))
            except BaseException:
                del self._pending[ident]
                raise
        return ident, fut

    def _remote_now(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._start(name, args, kwargs)[1].result(ANSWER_TIMEOUT)

    async def _remote(self, name: str, *args: Any, **kwargs: Any) -> Any:
        ident, fut = self._start(name, args, kwargs)
        answer = asyncio.wrap_future(fut)
        try:
            return await asyncio.shield(answer)
        except asyncio.CancelledError:
            if answer.done():
                raise
            with self._send_lock:
                self._conn.send(("cancel", ident))
            # The peer finishes with the call, one way or the other, before
            # the test goes on. If the call beat the cancel, its result
            # stands (as with a task that finishes before a cancel reaches it).
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(answer, ANSWER_TIMEOUT)
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                return answer.result()
            raise

    async def aclose(self) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            self._conn.send(("stop", -1))
        self._process.join(ANSWER_TIMEOUT)
        if self._process.is_alive():  # pragma: no cover - a wedged peer
            self._process.kill()
            self._process.join()
        self._reader.join(ANSWER_TIMEOUT)
        self._conn.close()
        await self._q.aclose()
        assert self._process.exitcode == 0, f"the peer exited with {self._process.exitcode}"
