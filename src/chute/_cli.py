"""The ``chute`` command (also ``python -m chute``).

    chute demo                         the main job on the embedded default
    chute worker module:fn --url URL --queue NAME [--min N] [--max N]
    chute put URL NAME [ITEM ...]      JSON items, or JSON lines from stdin
    chute inspect URL NAME             depth, in flight, dead letters, totals
    chute dead URL NAME [--requeue | --purge]
    chute tour                         the in-process queue between tasks,
                                       threads and loops

Errors are one line on stderr and a non-zero exit: 2 for a command line
that is wrong, 1 for a failure while running.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._exceptions import ChuteError
from ._open import open as open_queue
from ._workers import Workers, WorkerStatistics

DEMO_FILE = "chute-demo.db"
DEMO_QUEUE = "demo"


class _Failure(Exception):
    """A failure to report in one line (exit status 1)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chute",
        description="One queue API for asyncio programs: run workers, put, inspect.",
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="fill a local SQLite queue with jobs and work through them with an autoscaled pool",
    )
    demo.add_argument("--file", default=DEMO_FILE, help=f"the queue's file (default {DEMO_FILE})")
    demo.add_argument("--jobs", type=_positive, default=1000, help="jobs per batch (default 1000)")
    demo.add_argument("--max", type=_positive, default=32, help="most workers (default 32)")
    demo.add_argument(
        "--fail", type=float, default=0.05, help="the share of tries that fail (default 0.05)"
    )

    worker = sub.add_parser("worker", help="run a pool of workers calling module:function")
    worker.add_argument("handler", help="module:function, called with each item")
    worker.add_argument("--url", required=True, help="the queue's URL, e.g. sqlite:///jobs.db")
    worker.add_argument("--queue", required=True, help="the queue's name")
    worker.add_argument("--min", type=_natural, default=1, help="fewest workers (default 1)")
    worker.add_argument("--max", type=_positive, default=16, help="most workers (default 16)")
    worker.add_argument(
        "--max-deliveries",
        type=_positive,
        default=None,
        help="tries before an item goes to the dead letters (default: the queue's)",
    )
    worker.add_argument(
        "--retry-delay",
        type=float,
        default=1.0,
        help="seconds before the first retry of a failed item, doubling after (default 1)",
    )
    worker.add_argument(
        "--until-empty",
        action="store_true",
        help="stop once the queue is empty and nothing is in flight",
    )

    put = sub.add_parser("put", help="put JSON items (arguments, or lines on stdin)")
    put.add_argument("url")
    put.add_argument("name")
    put.add_argument("items", nargs="*", help="JSON values; none: read JSON lines from stdin")

    inspect = sub.add_parser("inspect", help="depth, in flight, dead letters and totals")
    inspect.add_argument("url")
    inspect.add_argument("name")
    inspect.add_argument("--json", action="store_true", help="one JSON object")

    dead = sub.add_parser("dead", help="list the dead letters (JSON lines), requeue or purge")
    dead.add_argument("url")
    dead.add_argument("name")
    what = dead.add_mutually_exclusive_group()
    what.add_argument("--requeue", action="store_true", help="put them back in the queue")
    what.add_argument("--purge", action="store_true", help="delete them")

    sub.add_parser("tour", help="the in-process queue between tasks, threads and loops")

    bench = sub.add_parser(
        "bench",
        help="run the benchmark suite (from a checkout): tables, and a PNG chart",
        description=(
            "Run chute's benchmarks against the libraries it replaces, from a checkout of "
            "chute's repository with the bench extra installed (pip install '.[bench]'), "
            "and write FOLDER/benchmarks.md and FOLDER/benchmarks.png."
        ),
    )
    bench.add_argument("--out", default="bench-results", metavar="FOLDER")
    bench.add_argument("--only", metavar="SUBSTRING", help="scenarios whose name contains it")
    bench.add_argument("--runs", type=_positive, default=5)
    bench.add_argument("--items", type=_positive, default=None)
    return parser


def _positive(text: str) -> int:
    value = _natural(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = {
        "demo": _demo,
        "worker": _worker,
        "put": _put,
        "inspect": _inspect,
        "dead": _dead,
        "tour": _tour,
        "bench": _bench,
    }[args.command]
    try:
        return command(args)
    except KeyboardInterrupt:
        return 130
    except (ChuteError, _Failure, ValueError, TypeError, OSError, ImportError) as exc:
        print(f"chute {args.command}: {exc}", file=sys.stderr)
        return 1


# -- put, inspect, dead ---------------------------------------------------------------


def _items(texts: Sequence[str]) -> list[Any]:
    items = []
    lines = texts if texts else list(sys.stdin)
    for n, text in enumerate(lines, 1):
        if not texts and not text.strip():
            continue  # blank lines are skipped, and counted
        try:
            items.append(json.loads(text))
        except json.JSONDecodeError as exc:
            where = f"argument {n}" if texts else f"line {n}"
            raise _Failure(f"{where} is not JSON: {exc.msg} ({text.strip()[:40]!r})") from None
    return items


def _put(args: argparse.Namespace) -> int:
    items = _items(args.items)
    with open_queue(args.url, args.name) as q:
        if items:
            q.sync.put_batch(items)  # all of them, or (an item refused) none
    print(f"put {len(items)} item{'s' * (len(items) != 1)} into {args.name!r}", file=sys.stderr)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    with open_queue(args.url, args.name) as q:
        s = q.statistics()
    fields = {
        "depth": s.size,
        "in_flight": s.in_flight,
        "dead_letters": s.dead_lettered,
        "unfinished": s.unfinished_tasks,
        "total_put": s.total_put,
        "total_got": s.total_got,
        "peak": s.peak_size,
        "maxsize": s.maxsize,
        "shutdown": s.shutdown,
    }
    if args.json:
        print(json.dumps(fields))
    else:
        width = max(map(len, fields))
        for key, value in fields.items():
            print(f"{key.replace('_', ' '):<{width}}  {value}")
    return 0


def _dead(args: argparse.Namespace) -> int:
    with open_queue(args.url, args.name) as q:
        if args.requeue:
            n = q.requeue_dead()
            print(f"requeued {n} dead letter{'s' * (n != 1)}", file=sys.stderr)
            return 0
        items = q.purge_dead() if args.purge else q.dead_letters()
    for item in items:
        print(json.dumps(item if not isinstance(item, bytes) else item.decode("latin-1")))
    if args.purge:
        print(f"purged {len(items)} dead letter{'s' * (len(items) != 1)}", file=sys.stderr)
    return 0


# -- worker ---------------------------------------------------------------------------


def _load(spec: str) -> Callable[[Any], Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise _Failure(f"{spec!r}: write the handler as module:function")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # not found, or failing as it loads
        raise _Failure(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise _Failure(f"{module_name!r} has no function {attr!r}")
    return handler  # type: ignore[no-any-return]


def _worker(args: argparse.Namespace) -> int:
    handler = _load(args.handler)
    if args.min > args.max:
        raise _Failure(f"--min {args.min} is above --max {args.max}")

    async def run() -> WorkerStatistics:
        options = {} if args.max_deliveries is None else {"max_deliveries": args.max_deliveries}
        async with open_queue(args.url, args.queue, **options) as q:
            workers = Workers(
                q,
                handler,
                min_workers=args.min,
                max_workers=args.max,
                retry_delay=args.retry_delay,
            )
            view = asyncio.ensure_future(_watch(q, workers, args.until_empty))
            try:
                return await workers.run()
            finally:
                view.cancel()
                await asyncio.gather(view, return_exceptions=True)

    stats = asyncio.run(run())
    _line(None, None, final=True)
    print(
        f"processed {stats.processed}, failed {stats.failed} (retried {stats.retried})",
        file=sys.stderr,
    )
    return 0


# -- the live view ---------------------------------------------------------------------


def _line(q: Any, workers: Workers[Any] | None, final: bool = False) -> None:
    """One status line: redrawn in place on a terminal, printed now and
    then otherwise."""
    tty = sys.stderr.isatty()
    if final:
        if tty:
            print(file=sys.stderr)
        return
    assert workers is not None
    s, w = q.statistics(), workers.statistics()
    p50 = "-" if w.latency_p50 is None else f"{w.latency_p50 * 1000:.0f}"
    p95 = "-" if w.latency_p95 is None else f"{w.latency_p95 * 1000:.0f}"
    text = (
        f"depth {s.size:>6}  in flight {s.in_flight:>4}  workers {w.workers:>3}  "
        f"{w.throughput:>7.0f}/s  p50 {p50:>4} ms  p95 {p95:>4} ms  "
        f"done {w.processed:>6}  failed {w.failed:>4}  dead {s.dead_lettered:>3}"
    )
    print(("\r" + text) if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)


async def _watch(q: Any, workers: Workers[Any], until_empty: bool) -> None:
    every = 0.25 if sys.stderr.isatty() else 2.0
    while True:
        await asyncio.sleep(every)
        _line(q, workers)
        if until_empty:
            s = q.statistics()
            if s.size == 0 and s.in_flight == 0:
                workers.shutdown()
                return


# -- demo ------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    if not 0 <= args.fail < 1:
        raise _Failure(f"--fail must be a share from 0 to below 1, not {args.fail}")
    url = f"sqlite:///{args.file}"
    print(f"chute demo: a durable queue in {args.file} (SQLite, no server)", file=sys.stderr)

    async def handle(job: dict[str, Any]) -> None:
        await asyncio.sleep(job["ms"] / 1000)  # the work: some I/O
        if job.get("poison"):
            raise ValueError(f"job {job['n']} can never succeed")
        if random.random() < args.fail:
            raise ConnectionError(f"job {job['n']}: a flaky dependency")

    async def run() -> tuple[WorkerStatistics, Any]:
        async with open_queue(url, DEMO_QUEUE, max_deliveries=3) as q:
            left = q.qsize() + q.statistics().in_flight
            if left:
                print(f"  resuming: {left} jobs left from the last run", file=sys.stderr)
            else:
                start = q.statistics().total_put
                jobs = [
                    {"n": start + i, "ms": random.choice((5, 10, 20, 40, 80))}
                    for i in range(args.jobs)
                ]
                jobs[len(jobs) // 2]["poison"] = True  # one that ends in the dead letters
                await q.put_batch(jobs)
                print(
                    f"  put {args.jobs} jobs (each sleeps 5-80 ms; {args.fail:.0%} of tries "
                    "fail and are retried; one always fails); Ctrl-C stops, run again to resume",
                    file=sys.stderr,
                )
            workers = Workers(q, handle, max_workers=args.max, retry_delay=0.05)
            view = asyncio.ensure_future(_watch(q, workers, until_empty=True))
            t0 = time.monotonic()
            try:
                stats = await workers.run()
            finally:
                view.cancel()
                await asyncio.gather(view, return_exceptions=True)
            _line(q, workers)
            _line(None, None, final=True)
            elapsed = time.monotonic() - t0
            return stats, (q.statistics(), elapsed)

    stats, (s, elapsed) = asyncio.run(run())
    left = s.size + s.in_flight
    print(
        f"handled {stats.processed} jobs in {elapsed:.1f} s ({stats.failed} failed tries "
        f"retried); dead letters {s.dead_lettered}; left in the queue {left}",
        file=sys.stderr,
    )
    lost = s.unfinished_tasks - left
    print(
        f"lost {max(lost, 0)}"
        + (f" — run `chute demo` again to finish the {left} left" if left else ""),
        file=sys.stderr,
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    sys.path.insert(0, os.getcwd())
    try:
        bench_main = importlib.import_module("benchmarks.__main__").main
    except ImportError as exc:
        raise _Failure(
            "the benchmarks live in chute's repository, not in the installed package: run "
            f"this from a checkout, after pip install '.[bench]' ({exc})"
        ) from None
    argv = ["--markdown", "--out", args.out, "--runs", str(args.runs)]
    if args.only:
        argv += ["--only", args.only]
    if args.items:
        argv += ["--items", str(args.items)]
    return int(bench_main(argv))


def _tour(args: argparse.Namespace) -> int:
    from ._demo import main as tour

    tour()
    return 0


__all__ = ["main"]
