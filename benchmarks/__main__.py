"""``python -m benchmarks``: chute's throughput next to its peers, in one process."""

from __future__ import annotations

import argparse
import sys

from . import harness, memory, peers

DEFAULT_ITEMS = 200_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Move N ints through each queue in every scenario and print the median "
            "items/s per library, with chute's rate divided by each peer's. Every run "
            "checks that each item arrived exactly once. Progress goes to stderr."
        ),
    )
    parser.add_argument(
        "--items",
        type=int,
        default=DEFAULT_ITEMS,
        metavar="N",
        help=f"items per run (default {DEFAULT_ITEMS:,})",
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
        help="run only scenarios whose name contains it (case-insensitive; -> matches →)",
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    if args.items < 1 or args.runs < 1 or not args.budget > 0:
        parser.error("--items and --runs must be at least 1, --budget above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = list(memory.SCENARIOS)
    if args.only:
        needle = args.only.replace("->", "→").casefold()
        scenarios = [sc for sc in scenarios if needle in sc.name.casefold()]
        if not scenarios:
            names = ", ".join(repr(sc.name) for sc in memory.SCENARIOS)
            sys.exit(f"--only {args.only!r} matches no scenario; there are: {names}")
    try:
        harness.loop_factory(args.loop)
    except ImportError:
        sys.exit(f"--loop {args.loop}: {args.loop} is not installed (see the `bench` extra)")

    subject = harness.load(peers.CHUTE)
    loaded, skipped = harness.load_peers(peers.PEERS)
    for note in skipped:
        harness.log_to_stderr(note + "\n")
    suite = harness.run_suite(
        memory.run_once,
        scenarios,
        subject,
        loaded,
        skipped,
        items=args.items,
        runs=args.runs,
        budget=args.budget,
        loop=args.loop,
        log=harness.log_to_stderr,
    )
    print(harness.markdown(suite) if args.markdown else harness.text(suite))
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
