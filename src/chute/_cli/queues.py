"""chute put, inspect, ls, dead and configure: commands that look at a
queue, or put in it, and return.

Only ``put`` creates a queue; only ``configure`` (and ``put`` given
``--maxsize`` or ``--max-deliveries``) changes its stored bounds. Every
other command opens with ``create=False``: looking at a queue that is not
there is ``QueueNotFound``, one line and exit status 1, nothing created.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .._codecs import encode_item, get_codec
from .._contract import UNSET, DeadLetter
from .._exceptions import QueueNotFound, QueueShutDown
from .._memory import Queue
from .._open import open as open_queue
from .._open import queue_names, without_password

#: Items stored in one transaction at most, and the lines read ahead of them.
BATCH = 500
#: Seconds after its first line that a batch is stored, however small.
FLUSH_AFTER = 0.2


class Failure(Exception):
    """A failure to report in one line (exit status 1)."""


class Interrupted(Exception):
    """Ctrl-C, after a command said what it had done (exit status 130)."""


def plural(n: int, word: str, words: str = "") -> str:
    return f"{n} {word if n == 1 else words or word + 's'}"


def bounds(args: argparse.Namespace) -> dict[str, Any]:
    """The bounds given on the command line, and only those."""
    given: dict[str, Any] = {}
    if args.maxsize is not None:
        given["maxsize"] = args.maxsize
    if args.max_deliveries is not UNSET:
        given["max_deliveries"] = args.max_deliveries
    return given


# -- put ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BadLine:
    number: int
    message: str


def _read_lines(lines: Queue[Any]) -> None:
    """Parse standard input's JSON lines into ``lines`` (bounded: it waits
    while the queue is full, so memory stays bounded whatever the input)."""
    try:
        for n, text in enumerate(sys.stdin, 1):
            if not text.strip():
                continue  # blank lines are skipped, and counted
            try:
                item = json.loads(text)
            except json.JSONDecodeError as exc:
                lines.sync.put(
                    _BadLine(n, f"line {n} is not JSON: {exc.msg} ({text.strip()[:40]!r})")
                )
                return
            lines.sync.put((n, item))
    except QueueShutDown:
        return  # the command stopped reading
    except (OSError, UnicodeDecodeError) as exc:
        lines.sync.put(_BadLine(0, f"cannot read standard input: {exc}"))
    finally:
        lines.shutdown()


async def _store(q: Any, batch: list[tuple[int, Any]], codec: Any, options: dict[str, Any]) -> int:
    """Store ``batch`` in one transaction; an item the codec refuses is
    named by its line, after the items before it are stored."""
    items = [item for _, item in batch]
    try:
        await q.put_batch(items, **options)
        return len(items)
    except (TypeError, ValueError) as exc:
        for i, (n, item) in enumerate(batch):
            try:
                encode_item(codec, item)
            except (TypeError, ValueError) as bad:
                if i:
                    await q.put_batch(items[:i], **options)
                raise Failure(f"line {n}: {bad}") from None
        raise Failure(str(exc)) from None


async def _stream(q: Any, codec: Any, stored: list[int], options: dict[str, Any]) -> None:
    lines: Queue[Any] = Queue(2 * BATCH)
    reader = threading.Thread(target=_read_lines, args=(lines,), daemon=True)
    reader.start()
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                first = await lines.get()
            except QueueShutDown:
                return  # the end of the input
            batch = [first]
            # A bounded queue takes a batch no larger than its bound.
            limit = min(BATCH, q.maxsize or BATCH)
            deadline = loop.time() + FLUSH_AFTER
            while len(batch) < limit and not isinstance(batch[-1], _BadLine):
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch += await lines.get_batch(limit - len(batch), timeout=left)
                except (TimeoutError, QueueShutDown):
                    break
            bad = next((b for b in batch if isinstance(b, _BadLine)), None)
            good = [b for b in batch if not isinstance(b, _BadLine)]
            if good:
                stored[0] += await _store(q, good, codec, options)
            if bad is not None:
                raise Failure(f"{bad.message}; stored {plural(stored[0], 'item')} before it")
    finally:
        lines.shutdown(immediate=True)  # the reader stops at its next line


def put(args: argparse.Namespace) -> int:
    given = bounds(args)

    async def run() -> int:
        stored = [0]
        async with open_queue(
            args.url, args.name, given.pop("maxsize", None), codec=args.codec, **given
        ) as q:
            options = {"delay": args.delay, "priority": args.priority}
            if args.key is not None:
                if len(args.items) != 1:
                    raise Failure("--key puts one item, given as an argument")
                if not await q.put(args.items[0], key=args.key, **options):
                    print(
                        f"an item with key {args.key!r} is in {args.name!r} already: "
                        "nothing stored",
                        file=sys.stderr,
                    )
                    return 0
                return 1
            if args.items:
                # Arguments: all of them, or (an item refused) none.
                await q.put_batch(args.items, **options)
                return len(args.items)
            task = asyncio.current_task()
            assert task is not None
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            try:
                await _stream(q, get_codec(args.codec), stored, options)
            except asyncio.CancelledError:
                # A put_batch cancelled here stored nothing (the contract):
                # the count is exact.
                raise Interrupted(
                    f"interrupted: stored {plural(stored[0], 'item')} in {args.name!r}; "
                    "the rest of the input was not read"
                ) from None
            finally:
                loop.remove_signal_handler(signal.SIGINT)
            return stored[0]

    n = asyncio.run(run())
    print(f"put {plural(n, 'item')} into {args.name!r}", file=sys.stderr)
    return 0


# -- inspect, ls ----------------------------------------------------------------------


def _numbers(s: Any) -> dict[str, Any]:
    return {
        "depth": s.size,
        "in_flight": s.in_flight,
        "delayed": s.delayed,
        "scheduled": s.scheduled,
        "dead_letters": s.dead_lettered,
        "unfinished": s.unfinished_tasks,
        "total_put": s.total_put,
        "total_got": s.total_got,
        "peak": s.peak_size,
        "maxsize": s.maxsize,
        "shutdown": s.shutdown,
    }


def inspect(args: argparse.Namespace) -> int:
    with open_queue(args.url, args.name, create=False, codec=args.codec) as q:
        fields = _numbers(q.statistics())
    if args.json:
        print(json.dumps(fields))
    else:
        width = max(map(len, fields))
        for key, value in fields.items():
            print(f"{key.replace('_', ' '):<{width}}  {value}")
    return 0


LS_COLUMNS = ("depth", "in_flight", "delayed", "dead_letters", "maxsize")


def ls(args: argparse.Namespace) -> int:
    rows = []
    for name in queue_names(args.url):
        try:
            with open_queue(args.url, name, create=False) as q:
                numbers = _numbers(q.statistics())
        except QueueNotFound as exc:
            # Deleted between the listing and the look (or only a part of
            # it left): say so, and list the others.
            print(f"chute ls: skipped {name!r}: {exc}", file=sys.stderr)
            continue
        rows.append({"queue": name, **{k: numbers[k] for k in LS_COLUMNS}})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(f"no queues at {without_password(args.url)}", file=sys.stderr)
        return 0
    heads = ["queue", *(c.replace("_", " ") for c in LS_COLUMNS)]
    table = [heads, *([str(v) for v in row.values()] for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(heads))]
    for r in table:
        cells = [
            r[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)),
        ]
        print("  ".join(cells).rstrip())
    return 0


# -- dead -----------------------------------------------------------------------------


def _record(d: DeadLetter[Any]) -> dict[str, Any]:
    record = d.to_dict()
    if isinstance(d.item, bytes):  # it could not be decoded: its stored bytes
        record["item"] = base64.b64encode(d.item).decode()
        record["item_encoding"] = "base64"
    return record


def _show(records: Iterable[DeadLetter[Any]], *, as_json: bool, traceback: bool) -> int:
    n = 0
    for n, d in enumerate(records, 1):  # noqa: B007 - n is the count after the loop
        if as_json:
            print(json.dumps(_record(d), default=repr))
            continue
        item = repr(d.item) if isinstance(d.item, bytes) else json.dumps(d.item, default=repr)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.died_at))
        print(f"{item}")
        print(f"    {d.reason}: {plural(d.deliveries, 'delivery', 'deliveries')}, died {when}")
        if d.error_type is not None:
            print(f"    {d.error_type}: {d.error}")
        if traceback and d.traceback:
            for line in d.traceback.rstrip().splitlines():
                print(f"    | {line}")
    return n


def dead(args: argparse.Namespace) -> int:
    with open_queue(args.url, args.name, create=False, codec=args.codec) as q:
        if args.requeue:
            n = q.requeue_dead()
            print(f"requeued {plural(n, 'dead letter')}", file=sys.stderr)
            return 0
        records = q.purge_dead() if args.purge else q.dead_letters()
    n = _show(records, as_json=args.json, traceback=args.traceback)
    if args.purge:
        print(f"purged {plural(n, 'dead letter')}", file=sys.stderr)
    elif not n and not args.json:
        print(f"no dead letters in {args.name!r}", file=sys.stderr)
    return 0


# -- configure ------------------------------------------------------------------------


def configure(args: argparse.Namespace) -> int:
    given = bounds(args)
    with open_queue(args.url, args.name, create=False, codec=args.codec) as q:
        before = q.statistics().maxsize
        q.configure(**given)
        after = q.statistics().maxsize
    said = []
    if "maxsize" in given:
        said.append(f"maxsize {after or 'unbounded'} (was {before or 'unbounded'})")
    if "max_deliveries" in given:
        limit = given["max_deliveries"]
        said.append(f"max deliveries {'no limit' if limit is None else limit}")
    print(f"configured {args.name!r}: {', '.join(said)}", file=sys.stderr)
    return 0
