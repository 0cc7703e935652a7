"""The command line: every command, argument and check of a value.

A value that cannot be right (a count below 1, an unknown codec, a URL
chute cannot open, a handler not written as ``module:function``) is
refused here, by argparse: one line and exit status 2. What can only fail
while running (a file or queue that is not there, a module that does not
import) is exit status 1, reported by ``main``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

from .._contract import UNSET
from .._open import check_url

DEMO_FILE = "chute-demo.db"
CODECS = ("json", "pickle")


class Parser(argparse.ArgumentParser):
    """argparse, but a bare ``chute`` prints the whole help (still exit 2)."""

    def error(self, message: str) -> Any:
        if self.prog == "chute" and "required: COMMAND" in message:
            self.print_help(_stderr())
            self.exit(2, "\nchute: give a command (chute COMMAND --help for its arguments)\n")
        super().error(message)


def _stderr() -> Any:
    import sys

    return sys.stderr


# -- values ---------------------------------------------------------------------------


def natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def positive(text: str) -> int:
    value = natural(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def port(text: str) -> int:
    """A TCP port to listen on: 1 to 65535 (0: any free one)."""
    value = natural(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port (0 to 65535): {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text}")
    return value


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a share from 0 to below 1, not {text}")
    return value


def max_deliveries(text: str) -> int | None:
    if text.lower() == "none":
        return None
    return positive(text)


def url(text: str) -> str:
    try:
        check_url(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def stored_url(text: str) -> str:
    """A URL of a stored queue: memory:// has nothing to look at from here."""
    text = url(text)
    if text.lower().startswith("memory:"):
        raise argparse.ArgumentTypeError(
            "a memory:// queue lives inside one process: the command opens "
            "sqlite:///file.db, redis://host:port/db or postgresql://user@host/database"
        )
    return text


def queue_name(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a queue name must not be empty")
    return text


def handler(text: str) -> str:
    module, _, function = text.partition(":")
    if not module or not function:
        raise argparse.ArgumentTypeError(f"{text!r}: write the handler as module:function")
    return text


def json_item(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not JSON: {exc.msg} ({text[:40]!r}); quote a string as '\"text\"'"
        ) from None


# -- the commands ---------------------------------------------------------------------

URL_HELP = (
    "the queue's URL: sqlite:///relative.db, sqlite:////absolute.db, redis://host:port/db "
    "or postgresql://user:password@host:port/database"
)


def _queue_args(p: argparse.ArgumentParser, *, name: bool = True, codec: bool = True) -> None:
    p.add_argument("url", type=stored_url, metavar="URL", help=URL_HELP)
    if name:
        p.add_argument("name", type=queue_name, metavar="NAME", help="the queue's name")
    if codec:
        p.add_argument(
            "--codec",
            choices=CODECS,
            default="json",
            help="how the queue's items are stored (default json; pickle only for queues "
            "written by trusted code)",
        )


def _bounds(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--maxsize",
        type=natural,
        default=None,
        metavar="N",
        help=f"{what} the queue's stored bound: at most N items (0: unbounded)",
    )
    p.add_argument(
        "--max-deliveries",
        type=max_deliveries,
        default=UNSET,
        metavar="N|none",
        help=f"{what} the queue's stored limit: deliveries before an item goes to the "
        "dead letters ('none': no limit)",
    )


class _Removed(argparse.Action):
    """An option chute worker no longer takes, and what to do instead."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            "--max-deliveries belongs to the queue, not to a worker: change it with "
            "chute configure URL NAME --max-deliveries N"
        )


def build() -> Parser:
    parser = Parser(
        prog="chute",
        description="One queue API for asyncio programs: run workers on a queue, put items, "
        "look at queues and their dead letters. Exit status: 0 done, 1 a failure while "
        "running, 2 a wrong command line, 130 interrupted.",
    )
    from .. import __version__

    parser.add_argument(
        "--version", action="version", version=f"chute {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=argparse.ArgumentParser
    )
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="fill a local SQLite queue with jobs and work through them with an autoscaled pool",
        description="Put jobs in a queue in a SQLite file (no server) and work through them "
        "with an autoscaled pool, live. Ctrl-C stops; run it again to resume.",
    )
    demo.add_argument(
        "--file", default=DEMO_FILE, metavar="PATH", help=f"the queue's file (default {DEMO_FILE})"
    )
    demo.add_argument(
        "--jobs", type=positive, default=1000, metavar="N", help="jobs to put (default 1000)"
    )
    demo.add_argument(
        "--max", type=positive, default=32, metavar="N", help="most workers (default 32)"
    )
    demo.add_argument(
        "--fail", type=share, default=0.05, metavar="SHARE",
        help="the share of tries that fail and are retried (default 0.05)",
    )  # fmt: skip

    worker = sub.add_parser(
        "worker",
        help="run an autoscaled pool of workers calling module:function on each item",
        description="Run Workers on a queue that exists: function (async def or plain) from "
        "module (importable from the current folder) is called with each item. Ctrl-C or "
        "SIGTERM stops gracefully; a second Ctrl-C gives the items in hand back at once. "
        "The queue's settings are never changed (use chute configure).",
    )
    _queue_args(worker)
    worker.add_argument(
        "handler", type=handler, metavar="module:function", help="called with each item"
    )
    worker.add_argument(
        "--min", type=natural, default=1, metavar="N", help="fewest workers (default 1)"
    )
    worker.add_argument(
        "--max", type=positive, default=16, metavar="N", help="most workers (default 16)"
    )
    worker.add_argument(
        "--retry-delay", type=seconds, default=1.0, metavar="S",
        help="seconds before the first retry of a failed item, doubling after (default 1)",
    )  # fmt: skip
    worker.add_argument(
        "--grace", type=seconds, default=30.0, metavar="S",
        help="seconds the items in hand get to finish after Ctrl-C (default 30)",
    )  # fmt: skip
    worker.add_argument(
        "--until-empty", action="store_true",
        help="stop once the queue is empty and nothing is in flight (with a progress bar)",
    )  # fmt: skip
    worker.add_argument(
        "--schedules", type=handler, metavar="module:NAME",
        help="also put the slots of these schedules (a list of chute.every() or chute.cron() "
        "in module), each once however many workers run them",
    )  # fmt: skip
    worker.add_argument(
        "--metrics-port", type=port, metavar="PORT",
        help="serve Prometheus metrics of the queue and the pool on http://HOST:PORT/metrics "
        "(needs chute[metrics])",
    )  # fmt: skip
    worker.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="HOST",
        help="the address the metrics are served on (default 127.0.0.1; 0.0.0.0 for all)",
    )  # fmt: skip
    worker.add_argument("--max-deliveries", action=_Removed, help=argparse.SUPPRESS)

    put = sub.add_parser(
        "put",
        help="put JSON items (arguments, or JSON lines streamed from stdin)",
        description="Put items in a queue, creating it if need be. Arguments are stored "
        "together or not at all; standard input is read as JSON lines (blank ones skipped) "
        "and stored in batches as it comes, so consumers see items while it is still being "
        "read. Ctrl-C says how many were stored (exit 130).",
    )
    _queue_args(put)
    put.add_argument(
        "items", nargs="*", type=json_item, metavar="JSON",
        help="JSON values (a string quoted: '\"text\"'); none: read JSON lines from stdin",
    )  # fmt: skip
    put.add_argument(
        "--delay", type=float, metavar="SECONDS",
        help="no one takes the items before SECONDS from now (they are stored at once)",
    )  # fmt: skip
    put.add_argument(
        "--priority", type=int, default=0, metavar="N",
        help="lower numbers are taken first (default 0); equal ones in the order put",
    )  # fmt: skip
    put.add_argument(
        "--key", metavar="KEY",
        help="store the one item given only if no item with KEY is in the queue (safe to "
        "retry); says so if one is",
    )  # fmt: skip
    _bounds(put, "set")

    inspect = sub.add_parser(
        "inspect",
        help="a queue's depth, in flight, delayed, dead letters and totals",
        description="Show a queue's numbers. Looking creates and changes nothing: a queue "
        "that is not there is an error (exit 1).",
    )
    _queue_args(inspect)
    inspect.add_argument("--json", action="store_true", help="one JSON object")

    board = sub.add_parser(
        "dashboard",
        help="a web page over the queues at URL: numbers, charts, dead letters",
        description="Serve a live web page over every queue at URL: depth, delayed, in flight, "
        "dead letters, the oldest ready item's age and small charts of the last minutes; a "
        "queue's dead letters, page by page, with requeue and purge. Needs chute[dashboard]. "
        "Listening beyond this machine (--host other than 127.0.0.1) asks for a token, "
        "made up and printed if --token is not given.",
    )
    _queue_args(board, name=False)
    board.add_argument(
        "--host", default="127.0.0.1", metavar="HOST",
        help="the address to listen on (default 127.0.0.1: this machine only)",
    )  # fmt: skip
    board.add_argument(
        "--port", type=port, default=8000, metavar="PORT", help="the port (default 8000)"
    )
    board.add_argument(
        "--token", default=os.environ.get("CHUTE_DASHBOARD_TOKEN"), metavar="TOKEN",
        help="ask every request for this token (default: $CHUTE_DASHBOARD_TOKEN; on a "
        "non-loopback --host one is made up if neither is given)",
    )  # fmt: skip

    ls = sub.add_parser(
        "ls",
        help="the queues in a file, on a server or in a database, with their numbers",
        description="List the queues stored at URL, each with its depth, in flight, delayed "
        "and dead letters. Creates nothing.",
    )
    _queue_args(ls, name=False, codec=False)
    ls.add_argument("--json", action="store_true", help="one JSON object per queue, a line each")

    dead = sub.add_parser(
        "dead",
        help="a queue's dead letters and why each died; requeue or purge them",
        description="List a queue's dead letters, oldest first: the item, its deliveries, "
        "when and why it died (the last error's type and message).",
    )
    _queue_args(dead)
    what = dead.add_mutually_exclusive_group()
    what.add_argument("--requeue", action="store_true", help="put them all back in the queue")
    what.add_argument("--purge", action="store_true", help="delete them (listing what was deleted)")
    dead.add_argument(
        "--json", action="store_true", help="one JSON object per dead letter, a line each"
    )
    dead.add_argument("--traceback", action="store_true", help="with each one's full traceback")

    configure = sub.add_parser(
        "configure",
        help="change a queue's stored maxsize or max deliveries, for every client",
        description="Change the bounds stored with a queue that exists: every client sees "
        "them on its next call. The only command that changes a queue's settings.",
    )
    _queue_args(configure)
    _bounds(configure, "change")

    sub.add_parser(
        "tour",
        help="the in-process queue between tasks, threads and loops",
        description="A short tour of chute.Queue: producers in tasks, a thread and another "
        "event loop, consumers reserving items.",
    )

    bench = sub.add_parser(
        "bench",
        help="run the benchmark suite (from a checkout): tables, and PNG charts",
        description=(
            "Run chute's benchmarks against the libraries it replaces, from a checkout of "
            "chute's repository with the bench extra installed (pip install '.[bench]'), "
            "and write FOLDER/benchmarks.md, FOLDER/benchmarks.png (the ratios) and "
            "FOLDER/scaling.png (how the rates grow with consumers and items stored)."
        ),
    )
    bench.add_argument(
        "--out", default="bench-results", metavar="FOLDER",
        help="where the tables and charts go (default bench-results)",
    )  # fmt: skip
    bench.add_argument("--only", metavar="SUBSTRING", help="only scenarios whose name contains it")
    bench.add_argument(
        "--runs", type=positive, default=5, metavar="N", help="runs of each (default 5)"
    )
    bench.add_argument(
        "--items",
        type=positive,
        default=None,
        metavar="N",
        help="items per run (default: each's own)",
    )
    return parser
