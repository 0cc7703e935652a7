"""The ``chute`` command (also ``python -m chute``).

    chute demo                              the main job on the embedded default
    chute worker URL NAME module:function   an autoscaled pool on a queue, live
    chute put URL NAME [JSON ...]           JSON items, or JSON lines streamed from stdin
    chute inspect URL NAME                  depth, in flight, delayed, dead letters, totals
    chute ls URL                            the queues there, with their numbers
    chute dead URL NAME                     dead letters and why; --requeue, --purge
    chute configure URL NAME --maxsize N    the one way to change a queue's bounds
    chute tour                              the in-process queue between tasks, threads
                                            and loops

Exit status: 0 done; 1 a failure while running (one line on stderr: a file or
queue that is not there, a server that does not answer, a module that does
not import); 2 a wrong command line (argparse's usage line); 130 Ctrl-C
where the command was interrupted (``put``; a pool stopped by Ctrl-C or
SIGTERM stops cleanly and exits 0).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .._contract import UNSET
from .._exceptions import ChuteError
from . import parser as cli

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    p = cli.build()
    try:
        args, extra = p.parse_known_args(argv)
        _check(p, args, extra)
    except SystemExit as exc:  # argparse: --help, --version, or a wrong command line
        return exc.code if isinstance(exc.code, int) else 2
    from . import demo, queues, run

    command: Callable[[Any], int] = {
        "demo": demo.demo,
        "worker": run.worker,
        "put": queues.put,
        "inspect": queues.inspect,
        "ls": queues.ls,
        "dead": queues.dead,
        "configure": queues.configure,
        "tour": _tour,
        "bench": _bench,
        "dashboard": _dashboard,
    }[args.command]
    try:
        return command(args)
    except KeyboardInterrupt:
        return 130
    except queues.Interrupted as exc:
        print(f"chute {args.command}: {exc}", file=sys.stderr)
        return 130
    except (ChuteError, queues.Failure, ValueError, TypeError, OSError, ImportError) as exc:
        print(f"chute {args.command}: {exc}", file=sys.stderr)
        return 1


def _check(p: cli.Parser, args: Any, extra: list[str]) -> None:
    """What argparse cannot check argument by argument."""
    if extra and args.command == "put" and not any(e.startswith("--") for e in extra):
        # Items after an option (chute put URL NAME --maxsize 5 1 2): argparse
        # gives a positional list only what comes before the first option.
        try:
            args.items += [cli.json_item(e) for e in extra]
        except argparse.ArgumentTypeError as exc:
            p.error(f"put: argument JSON: {exc}")
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "worker" and args.min > args.max:
        p.error(f"worker: --min {args.min} is above --max {args.max}")
    if args.command == "configure" and args.maxsize is None and args.max_deliveries is UNSET:
        p.error("configure: give --maxsize N, --max-deliveries N|none, or both")


def _bench(args: Any) -> int:
    from .queues import Failure

    sys.path.insert(0, os.getcwd())
    try:
        bench_main = importlib.import_module("benchmarks.__main__").main
    except ImportError as exc:
        raise Failure(
            "the benchmarks live in chute's repository, not in the installed package: run "
            f"this from a checkout, after pip install '.[bench]' ({exc})"
        ) from None
    argv = ["--markdown", "--out", args.out, "--runs", str(args.runs)]
    if args.only:
        argv += ["--only", args.only]
    if args.items:
        argv += ["--items", str(args.items)]
    return int(bench_main(argv))


def _dashboard(args: Any) -> int:
    from .dashboard import dashboard

    return dashboard(args)


def _tour(args: Any) -> int:
    from .tour import main as tour

    tour()
    return 0
