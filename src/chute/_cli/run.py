"""chute worker (and the pool under chute demo): a pool at work, shown live, stopped cleanly.

Ctrl-C (or SIGTERM) once: the pool takes nothing more, the items in hand
get the grace period to finish, and the command says so; twice: the items
in hand go back to the queue at once. Either way one summary, printed once.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .._exceptions import ChuteError
from .._open import open as open_queue
from .._open import without_password
from .._schedules import Schedule
from .._workers import Workers, WorkerStatistics
from . import view as live
from .queues import Failure, plural

#: The words of the error a transport raises for an item its codec cannot read.
UNDECODABLE = "could not be decoded"


def _attribute(spec: str) -> tuple[str, str, Any]:
    """``module:name``'s module name, name, and value (None if not there)."""
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # not found, or failing as it loads
        raise Failure(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    return module_name, attr, getattr(module, attr, None)


def load(spec: str) -> Callable[[Any], Any]:
    module_name, attr, handler = _attribute(spec)
    if not callable(handler):
        raise Failure(f"{module_name!r} has no function {attr!r}")
    return handler  # type: ignore[no-any-return]


def load_schedules(spec: str | None) -> list[Schedule]:
    """``module:NAME``, a list of ``chute.every()``/``chute.cron()`` schedules."""
    if spec is None:
        return []
    module_name, attr, value = _attribute(spec)
    if not isinstance(value, list | tuple) or not all(isinstance(s, Schedule) for s in value):
        raise Failure(
            f"{module_name}:{attr} must be a list of chute.every() or chute.cron() schedules"
        )
    return list(value)


class CodecGuard:
    """The queue as the pool sees it, except that an item the codec cannot
    decode stops the pool at once: a worker started with the wrong codec
    must not move every item of the queue to the dead letters."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.error: ChuteError | None = None
        self.workers: Workers[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def reserve(self, timeout: float | None = None) -> Any:
        try:
            return await self._queue.reserve(timeout)
        except ChuteError as exc:
            if UNDECODABLE in str(exc):
                if self.error is None:
                    self.error = exc
                if self.workers is not None:
                    self.workers.shutdown()
            raise


async def drive(
    workers: Workers[Any], view: live.View, grace: float, *, until_empty: bool
) -> WorkerStatistics:
    """Run the pool with its live view until it stops; Ctrl-C and SIGTERM
    stop it as the module docstring says."""
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            busy = workers.statistics().in_flight
            view.say(
                f"stopping: waiting for {plural(busy, 'job')} (grace {grace:g} s) — "
                "Ctrl-C again to give them back now",
                "yellow",
            )
        # The first stops taking items; the second gives those in hand back
        # (and the pool says so).
        workers.shutdown(immediate=signals > 1)

    def empty(n: live.Numbers) -> None:
        if until_empty and n.queue.size == 0 and n.queue.in_flight == 0:
            workers.shutdown()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - Windows
            pass
    workers.start()
    watching = asyncio.ensure_future(view.run(empty))
    try:
        return await workers.wait()
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        for sig in installed:
            loop.remove_signal_handler(sig)


def _total(until_empty: bool) -> Callable[[Any, int], int | None]:
    def total(s: Any, done: int) -> int | None:
        return done + s.size + s.in_flight if until_empty else None

    return total


# -- worker ---------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> int:
    handler = load(args.handler)
    schedules = load_schedules(args.schedules)
    out = live.console()
    live.log_to(out)

    async def run() -> tuple[WorkerStatistics, Any, CodecGuard]:
        async with open_queue(args.url, args.name, create=False, codec=args.codec) as q:
            guard = CodecGuard(q)
            workers: Workers[Any] = Workers(
                guard,
                handler,
                min_workers=args.min,
                max_workers=args.max,
                retry_delay=args.retry_delay,
                grace=args.grace,
                schedules=schedules,
            )
            guard.workers = workers
            dead0 = (await asyncio.to_thread(q.statistics)).dead_lettered
            metrics = _serve_metrics(args, out, q, workers)

            def look() -> live.Numbers:
                return live.look(q, workers, dead_at_start=dead0, total=_total(args.until_empty))

            view = live.View(out, look)
            try:
                stats = await drive(workers, view, args.grace, until_empty=args.until_empty)
            finally:
                if metrics is not None:
                    metrics.shutdown()
                    metrics.server_close()
                final = await asyncio.to_thread(look)
                view.close(final)
            return stats, final, guard

    stats, final, guard = asyncio.run(run())
    if guard.error is not None:
        other = "pickle" if args.codec == "json" else "json"
        raise Failure(
            f"{guard.error} — the queue's items are not {args.codec}: is it written with "
            f"--codec {other}? (chute dead {without_password(args.url)} {args.name} --requeue "
            "puts the item back)"
        )
    s = final.queue
    died = max(0, final.done - stats.processed)
    live.say(
        out,
        f"processed {stats.processed}, failed {stats.failed} (retried {stats.retried}), "
        f"dead letters {died} new ({s.dead_lettered} in all); left in the queue "
        f"{s.size + s.in_flight}",
    )
    _leave_stuck_handlers(out)
    return 0


def _serve_metrics(args: argparse.Namespace, out: Any, queue: Any, workers: Workers[Any]) -> Any:
    """``--metrics-port``: the HTTP server of ``chute.metrics``, or None."""
    if args.metrics_port is None:
        return None
    try:
        from .. import metrics
    except ImportError as exc:
        raise Failure(f"--metrics-port: {exc}") from None
    try:
        _, server = metrics.serve(args.metrics_port, queue, workers, host=args.metrics_host)
    except OSError as exc:
        where = f"{args.metrics_host}:{args.metrics_port}"
        raise Failure(f"cannot serve metrics on {where}: {exc.strerror or exc}") from None
    host, port = server.server_address[:2]
    live.say(out, f"metrics on http://{host}:{port}/metrics")
    return server


def _leave_stuck_handlers(out: Any) -> None:
    """A plain handler still running past the grace period (its job was
    given back) would keep the process alive until it returns: go now."""
    deadline = time.monotonic() + 0.5
    for thread in threading.enumerate():
        if thread.name.startswith("chute-worker"):
            thread.join(max(0.0, deadline - time.monotonic()))  # idle ones end at once
    stuck = [t for t in threading.enumerate() if t.name.startswith("chute-worker") and t.is_alive()]
    if stuck:
        live.say(
            out,
            f"leaving {plural(len(stuck), 'handler')} still running (their jobs were given back)",
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
