"""``python -m benchmarks``: chute's throughput next to its peers.

The in-process scenarios first (tasks and threads, one table), then the
process scenarios (producer processes, one consumer; another table), then
the SQLite scenarios (chute's durable queue and its peers; a third table),
then the Redis scenarios (a server started for them; a fourth table), then
the PostgreSQL scenarios (a server started for them; a fifth table), then
what ``chute.Workers`` costs over a hand-written pool (a sixth table).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import (
    dashboard,
    harness,
    memory,
    options,
    peers,
    postgres,
    process,
    redis,
    scaling,
    sqlite,
    workers,
)

DEFAULT_ITEMS = 200_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Move N items through each queue in every scenario and print the median "
            "items/s per library, with chute's rate divided by each peer's: in one "
            "process (tasks, threads), then from producer processes to this one, then "
            "through a SQLite file. Every run checks that each item arrived exactly "
            "once. Progress goes to stderr."
        ),
    )
    parser.add_argument(
        "--items",
        type=int,
        default=None,
        metavar="N",
        help=(
            f"items per run (default {DEFAULT_ITEMS:,}; "
            f"{sqlite.DEFAULT_ITEMS:,} for the SQLite scenarios, "
            f"{redis.DEFAULT_ITEMS:,} for the Redis ones, "
            f"{postgres.DEFAULT_ITEMS:,} for the PostgreSQL ones)"
        ),
    )
    parser.add_argument(
        "--runs", type=int, default=5, metavar="R", help="runs per library; the median counts"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="a library too slow to move N items in about this long moves fewer (default 0.5)",
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument(
        "--only",
        metavar="SUBSTRING",
        help=(
            "run only scenarios whose name contains it (case-insensitive; -> matches →); "
            "'process' selects the process scenarios, 'sqlite' the SQLite ones, "
            "'redis' the Redis ones, 'postgres' the PostgreSQL ones, 'options' what a "
            "delay, a priority and a key cost, 'scaling' how cost grows with consumers and stored "
            "items, 'dashboard' the dashboard's pages"
        ),
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument(
        "--out",
        metavar="FOLDER",
        help="also write FOLDER/benchmarks.md (the tables), FOLDER/benchmarks.png (a chart "
        "of the ratios) and FOLDER/scaling.png (the scaling table's rates); the charts need "
        "matplotlib, in the bench extra",
    )
    args = parser.parse_args(argv)
    if (args.items is not None and args.items < 1) or args.runs < 1 or not args.budget > 0:
        parser.error("--items and --runs must be at least 1, --budget above 0")
    return args


#: (scenarios, run_once, subject, peers, what a run moves, notes under the table,
#: items per run unless --items says)
GROUPS: tuple[tuple[Any, ...], ...] = (
    (memory.SCENARIOS, memory.run_once, peers.CHUTE, peers.PEERS, "ints", (), DEFAULT_ITEMS),
    (
        process.SCENARIOS,
        process.run_once,
        process.SUBJECT,
        process.PEERS,
        "items",
        process.NOTES,
        DEFAULT_ITEMS,
    ),
    (
        sqlite.SCENARIOS,
        sqlite.run_once,
        sqlite.SUBJECT,
        sqlite.PEERS,
        "ints",
        sqlite.NOTES,
        sqlite.DEFAULT_ITEMS,
    ),
    (
        redis.SCENARIOS,
        redis.run_once,
        redis.SUBJECT,
        redis.PEERS,
        "ints",
        redis.NOTES,
        redis.DEFAULT_ITEMS,
    ),
    (
        postgres.SCENARIOS,
        postgres.run_once,
        postgres.SUBJECT,
        postgres.PEERS,
        "ints",
        postgres.NOTES,
        postgres.DEFAULT_ITEMS,
    ),
    (
        options.SCENARIOS,
        options.run_once,
        options.SUBJECT,
        options.PEERS,
        "ints",
        options.NOTES,
        options.DEFAULT_ITEMS,
    ),
    (
        workers.SCENARIOS,
        workers.run_once,
        workers.SUBJECT,
        workers.PEERS,
        "ints",
        workers.NOTES,
        workers.DEFAULT_ITEMS,
    ),
    (
        scaling.SCENARIOS,
        scaling.run_once,
        scaling.SUBJECT,
        scaling.PEERS,
        "ints",
        scaling.NOTES,
        scaling.DEFAULT_ITEMS,
    ),
    (
        dashboard.SCENARIOS,
        dashboard.run_once,
        dashboard.SUBJECT,
        dashboard.PEERS,
        "pages",
        dashboard.NOTES,
        dashboard.DEFAULT_ITEMS,
    ),
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [list(group[0]) for group in GROUPS]
    if args.only:
        needle = args.only.replace("->", "→").casefold()
        selected = [[sc for sc in scs if needle in sc.name.casefold()] for scs in selected]
        if not any(selected):
            names = ", ".join(repr(sc.name) for group in GROUPS for sc in group[0])
            sys.exit(f"--only {args.only!r} matches no scenario; there are: {names}")
    try:
        harness.loop_factory(args.loop)
    except ImportError:
        sys.exit(f"--loop {args.loop}: {args.loop} is not installed (see the `bench` extra)")

    failed, first = False, True
    suites: list[harness.Suite] = []
    for scenarios, (_, run_once, subject_peer, peer_list, unit, notes, items) in zip(
        selected, GROUPS, strict=True
    ):
        if not scenarios:
            continue
        subject = harness.load(subject_peer)
        loaded, skipped = harness.load_peers(peer_list)
        for note in skipped:
            harness.log_to_stderr(note + "\n")
        suite = harness.run_suite(
            run_once,
            scenarios,
            subject,
            loaded,
            skipped,
            items=items if args.items is None else args.items,
            runs=args.runs,
            budget=args.budget,
            loop=args.loop,
            log=harness.log_to_stderr,
            unit=unit,
            notes=notes,
        )
        if not first:
            print()
        print(harness.markdown(suite) if args.markdown else harness.text(suite), flush=True)
        suites.append(suite)
        failed = failed or suite.failed
        first = False
    if args.out:
        _write(args.out, suites)
    return 1 if failed else 0


def _write(folder: str, suites: list[harness.Suite]) -> None:
    os.makedirs(folder, exist_ok=True)
    tables = os.path.join(folder, "benchmarks.md")
    with open(tables, "w") as f:
        f.write("\n\n".join(harness.markdown(suite) for suite in suites) + "\n")
    print(f"\nwrote {tables}", file=sys.stderr)
    from .chart import write_png, write_scaling_png  # matplotlib: only when drawing

    for draw, name in ((write_png, "benchmarks.png"), (write_scaling_png, "scaling.png")):
        png = os.path.join(folder, name)
        try:
            draw(suites, png)
        except ImportError:
            print("no chart: matplotlib is not installed (see the bench extra)", file=sys.stderr)
        except ValueError as exc:
            print(f"no {name}: {exc}", file=sys.stderr)
        else:
            print(f"wrote {png}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
