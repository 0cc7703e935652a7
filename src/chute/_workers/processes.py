"""``Workers(processes=N)``: a plain function run in worker processes, fed
through a ``ProcessQueue``, its failures handed back as themselves."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pickle
import signal
import traceback
from collections.abc import Callable
from typing import Any

from .failures import logger


class HandlerFailed(Exception):
    """A handler in a worker process failed in a way that cannot be handed
    back as its own exception: one that does not pickle (``str()`` is its
    type and message, its traceback there the ``__cause__``), or the
    process died."""


class RemoteTraceback(Exception):
    """The traceback of a handler's exception in a worker process, as text:
    the ``__cause__`` of the exception raised in the pool."""

    def __str__(self) -> str:
        return str(self.args[0])


# How they read in a dead letter's traceback: no private module named.
HandlerFailed.__module__ = RemoteTraceback.__module__ = "chute"

#: What a worker process reports for an item: None (done), "start", or a
#: failure: (the pickled exception or None, "Type: message", traceback text,
#: its frames as (file, line, function)).
_Report = None | str | tuple[bytes | None, str, str, list[tuple[str, int | None, str]]]


def _report(exc: BaseException) -> _Report:
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # from the handler in
    pickled: bytes | None = None
    with contextlib.suppress(Exception):
        data = pickle.dumps(exc)
        pickle.loads(data)  # some pickle and do not come back
        pickled = data
    return (
        pickled,
        f"{type(exc).__name__}: {exc}",
        "".join(traceback.format_exception(exc)),
        [(f.filename, f.lineno, f.name) for f in frames],
    )


def _failure(report: _Report) -> BaseException | None:
    """The exception a worker process reported, with its traceback there as
    its cause (as ``concurrent.futures.ProcessPoolExecutor`` does)."""
    if report is None or report == "start":
        return None
    if isinstance(report, str):
        return HandlerFailed(report)
    pickled, message, text, frames = report
    exc: BaseException = HandlerFailed(message)
    if pickled is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(pickled)
    exc.__cause__ = RemoteTraceback(f"\n(in the worker process)\n{text}")
    with contextlib.suppress(AttributeError):  # for the failure log: where it was raised
        exc._chute_frames = [  # type: ignore[attr-defined]
            traceback.FrameSummary(file, line, name, line=None) for file, line, name in frames
        ]
    return exc


def _serve(handler: Callable[[Any], Any], feed: Any, results: Any) -> None:
    """A worker process: handle what the feed brings until it is shut down."""
    # Ctrl-C reaches the whole process group: the parent stops the pool;
    # a handler here finishes its item (or is terminated past the grace).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid = os.getpid()
    try:
        for token, item in feed.sync:
            results.sync.put((token, pid, "start"))
            try:
                handler(item)
            except BaseException as exc:  # reported, not raised: the pool decides
                results.sync.put((token, pid, _report(exc)))
            else:
                results.sync.put((token, pid, None))
    finally:
        feed.close()
        results.close()


class _ProcessPool:
    """``processes`` worker processes fed through a ProcessQueue; the
    answers come back through another, read by one task, which also
    replaces a process that died (failing the item it held)."""

    def __init__(self, handler: Callable[[Any], Any], n: int) -> None:
        import multiprocessing

        from .._process import ProcessQueue

        self._handler = handler
        self._feed: ProcessQueue[Any] = ProcessQueue()
        self._results: ProcessQueue[Any] = ProcessQueue()
        self._ctx = multiprocessing.get_context("spawn")  # a clean process: no threads, no loop
        self._procs = [self._spawn() for _ in range(n)]
        self._tokens = itertools.count()
        self._pending: dict[int, asyncio.Future[_Report]] = {}
        self._holding: dict[int, int] = {}  # pid -> the token it is handling
        self._closed = False
        self._reader = asyncio.ensure_future(self._read())
        self._watcher = asyncio.ensure_future(self._watch())

    def _spawn(self) -> Any:
        proc = self._ctx.Process(
            target=_serve, args=(self._handler, self._feed, self._results), daemon=True
        )
        proc.start()
        return proc

    async def _read(self) -> None:
        async for token, pid, outcome in self._results:
            if outcome == "start":
                self._holding[pid] = token
                continue
            self._holding.pop(pid, None)
            self._answer(token, outcome)

    def _answer(self, token: int, outcome: _Report) -> None:
        fut = self._pending.pop(token, None)
        if fut is not None and not fut.done():  # else: its caller gave up
            fut.set_result(outcome)

    async def _watch(self) -> None:
        while not self._closed:
            await asyncio.sleep(0.2)
            for i, proc in enumerate(self._procs):
                if proc.exitcode is not None and not self._closed:
                    token = self._holding.pop(proc.pid, None)
                    logger.warning(
                        "a worker process died (exit code %s)%s; another takes its place",
                        proc.exitcode,
                        "" if token is None else " while handling an item",
                    )
                    if token is not None:
                        self._answer(token, f"the worker process died (exit code {proc.exitcode})")
                    self._procs[i] = self._spawn()

    async def run(self, item: Any) -> None:
        token = next(self._tokens)
        fut: asyncio.Future[_Report] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        try:
            await self._feed.put((token, item))
            error = _failure(await fut)
        finally:
            self._pending.pop(token, None)
        if error is not None:
            raise error

    async def close(self, deadline: Callable[[], float]) -> None:
        """Stop the processes: they finish what they hold until ``deadline()``
        (the loop's clock; it may come nearer meanwhile), then are
        terminated (those items were given back)."""
        if self._closed:
            return
        self._closed = True
        self._watcher.cancel()
        # What is still in the feed belongs to jobs already given back.
        self._feed.shutdown(immediate=True)
        loop = asyncio.get_running_loop()
        for proc in self._procs:
            while proc.is_alive() and loop.time() < deadline():
                await loop.run_in_executor(None, proc.join, min(0.1, deadline() - loop.time()))
            if proc.is_alive():
                proc.terminate()
                await loop.run_in_executor(None, proc.join, 5)
        self._results.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._feed.close()
        self._results.close()
