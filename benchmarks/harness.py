"""Everything that is not a scenario: loading peers, timing, medians, tables.

Each measurement runs on a fresh event loop after a garbage collection; the
runs of one scenario are interleaved across libraries (run 1 of every
library, then run 2, ...), so drift on a noisy machine hits them all alike.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import os
import platform
import statistics
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol


class PeerLike(Protocol):
    """A column of a table: ``peers.Peer`` and ``process.Way`` are both one."""

    @property
    def name(self) -> str: ...

    #: The module to import (``None``: the standard library).
    @property
    def module(self) -> str | None: ...

    #: Said under the table.
    @property
    def note(self) -> str: ...


class ScenarioLike(Protocol):
    @property
    def name(self) -> str: ...

    def supports(self, peer: Any) -> bool: ...


#: ``run_once(scenario, peer, module, items, timeout)``: one timed run, items/s.
RunOnce = Callable[[Any, Any, Any, int, float], Coroutine[Any, Any, float]]

#: A column may name the column it is compared with (``versus``, a column
#: name, or ``None`` for no ratio); by default that is the subject's.
_SUBJECT = object()


def versus(peer: PeerLike, subject: PeerLike) -> str | None:
    """The name of the column whose rate is divided by ``peer``'s in the tables."""
    name = getattr(peer, "versus", _SUBJECT)
    return subject.name if name is _SUBJECT else name


@dataclass
class Loaded:
    peer: PeerLike
    module: Any
    version: str


@dataclass
class Result:
    scenario: ScenarioLike
    peer: PeerLike
    rates: list[float] = field(default_factory=list)
    error: str | None = None
    sizes: list[int] = field(default_factory=list)  # items moved, per run

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def spread(self) -> float:
        """max - min, relative to the median."""
        return (max(self.rates) - min(self.rates)) / self.median


@dataclass
class Suite:
    subject: Loaded
    peers: list[Loaded]
    skipped: list[str]
    results: list[Result]
    items: int
    runs: int
    budget: float
    loop: str
    #: What a run moves, for the first footnote.
    unit: str = "ints"
    #: Said under the table after the first footnote.
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(r.error for r in self.results)


# -- setup -----------------------------------------------------------------------


def load(peer: PeerLike) -> Loaded:
    """Import the peer's module; ``ImportError`` if it is not installed."""
    if peer.module is None:
        return Loaded(peer, None, "Python " + platform.python_version())
    module = importlib.import_module(peer.module)
    try:
        version = metadata.version(peer.module)
    except metadata.PackageNotFoundError:
        version = getattr(module, "__version__", "?")
    return Loaded(peer, module, version)


def load_peers(peers: Iterable[PeerLike]) -> tuple[list[Loaded], list[str]]:
    loaded, skipped = [], []
    for peer in peers:
        try:
            loaded.append(load(peer))
        except ImportError as e:
            skipped.append(f"{peer.name}: skipped, cannot import it ({e}); see the `bench` extra.")
    return loaded, skipped


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "asyncio":
        return asyncio.new_event_loop
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop  # type: ignore[no-any-return]
    raise ValueError(f"unknown loop {name!r}")


def timeout_for(items: int) -> float:
    """Generous: only a hung peer should ever hit it."""
    return max(60.0, items / 2_000)


# -- running -------------------------------------------------------------------


def measure(
    run_once: RunOnce,
    factory: Callable[[], asyncio.AbstractEventLoop],
    scenario: Any,
    lib: Loaded,
    items: int,
) -> float:
    """One run on a fresh event loop; items/s."""
    gc.collect()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_once(scenario, lib.peer, lib.module, items, timeout_for(items)))


def run_suite(
    run_once: RunOnce,
    scenarios: Sequence[ScenarioLike],
    subject: Loaded,
    peers: list[Loaded],
    skipped: list[str],
    *,
    items: int,
    runs: int,
    budget: float,
    loop: str,
    log: Callable[[str], None],
    unit: str = "ints",
    notes: Sequence[str] = (),
) -> Suite:
    factory = loop_factory(loop)
    warmup = min(items, max(1_000, items // 50))
    results = []
    for sc in scenarios:
        libs = [lib for lib in [subject, *peers] if sc.supports(lib.peer)]
        rows = [Result(sc, lib.peer) for lib in libs]
        log(f"{sc.name}: ")
        run = functools.partial(measure, run_once, factory, sc)

        # Run 0 warms up and is not counted. Every run resizes the next ones of
        # a slow library so that they last about `budget` seconds rather than
        # move `items` items (only ever downwards: a peer whose speed varies
        # a lot from run to run must not get one lucky run and then crawl).
        todo = [warmup] * len(libs)
        for n in range(runs + 1):
            for i, (row, lib) in enumerate(zip(rows, libs, strict=True)):
                if row.error or (rate := _attempt(row, log, run, lib, todo[i])) is None:
                    continue
                if n:
                    row.rates.append(rate)
                    row.sizes.append(todo[i])
                todo[i] = max(warmup, min(todo[i] if n else items, int(rate * budget)))
            log("." if n else "")
        log("\n")
        results.extend(rows)
    return Suite(subject, peers, skipped, results, items, runs, budget, loop, unit, list(notes))


def _attempt(
    row: Result, log: Callable[[str], None], fn: Callable[..., float], *args: Any
) -> float | None:
    """``fn(*args)``, or None with the failure recorded on ``row``."""
    try:
        return fn(*args)
    except Exception as e:
        row.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        log(f"\n  {row.peer.name} FAILED: {row.error}\n")
        return None


# -- reporting -------------------------------------------------------------------


def rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M/s"
    if value >= 1e4:
        return f"{value / 1e3:.0f} k/s"
    return f"{value / 1e3:.2f} k/s"  # SQLite-slow: three digits, not one


def _cell(row: Result | None, subject: Result | None) -> str:
    if row is None:
        return "-"
    if row.error:
        return "FAILED"
    if subject is None or subject is row or subject.error:
        return rate(row.median)
    return f"{rate(row.median)} ({subject.median / row.median:.2f}x)"


def _compared_with(suite: Suite, row: Result) -> Result | None:
    """The row whose rate is divided by ``row``'s (same scenario), if any."""
    name = versus(row.peer, suite.subject.peer)
    if name is None:
        return None
    return next(
        (r for r in suite.results if r.scenario is row.scenario and r.peer.name == name), None
    )


def _table(suite: Suite) -> tuple[list[str], list[list[str]]]:
    names = [lib.peer.name for lib in [suite.subject, *suite.peers]]
    by_key = {(r.scenario.name, r.peer.name): r for r in suite.results}
    scenarios = list(dict.fromkeys(r.scenario.name for r in suite.results))
    # Columns no scenario used (e.g. asyncio.Queue with --only thread) go away.
    names = [n for n in names if any((s, n) in by_key for s in scenarios)]
    rows = []
    for s in scenarios:
        cells = []
        for n in names:
            row = by_key.get((s, n))
            cells.append(_cell(row, _compared_with(suite, row) if row else None))
        rows.append([s, *cells])
    return ["scenario", *names], rows


def _environment(suite: Suite) -> str:
    # One entry per module: several columns may measure one library.
    first: dict[str | None, Loaded] = {}
    for lib in [suite.subject, *suite.peers]:
        first.setdefault(lib.peer.module, lib)
    versions = ", ".join(f"{lib.peer.name} {lib.version}" for lib in first.values() if lib.module)
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{suite.loop} loop, {platform.system()} {platform.machine()}, "
        f"{_cpus()} CPUs; {versions}."
    )


def _cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _footnotes(suite: Suite) -> list[str]:
    used = {r.peer.name for r in suite.results}
    notes = [
        f"Median items/s over {suite.runs} runs; (Nx) = chute's rate / that library's "
        "rate, so above 1 means chute is faster. A run moves "
        f"{suite.items:,} {suite.unit}, or fewer for a library too slow to do that in about "
        f"{suite.budget:g} s (that one runs for about {suite.budget:g} s instead).",
        *suite.notes,
        *(lib.peer.note for lib in suite.peers if lib.peer.note and lib.peer.name in used),
        *suite.skipped,
        *(
            f"{r.peer.name} failed in {r.scenario.name!r}: {r.error}"
            for r in suite.results
            if r.error
        ),
    ]
    return notes


def markdown(suite: Suite) -> str:
    header, rows = _table(suite)
    lines = [_environment(suite), ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":---", *("---:" for _ in header[1:])]) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    lines.append("")
    lines.extend(f"- {note}" for note in _footnotes(suite))
    return "\n".join(lines)


def text(suite: Suite) -> str:
    lines = [_environment(suite), ""]
    width = max((len(r.peer.name) for r in suite.results), default=0)
    current = None
    for r in suite.results:
        if r.scenario.name != current:
            current = r.scenario.name
            lines.append(current)
        if r.error:
            lines.append(f"  {r.peer.name:<{width}}  FAILED: {r.error}")
            continue
        line = (
            f"  {r.peer.name:<{width}}  {rate(r.median):>10}  spread {r.spread:4.0%}"
            f"  {_sizes(r.sizes):>17} items/run"
        )
        subject = _compared_with(suite, r)
        if subject is not None and subject is not r and not subject.error:
            line += f"   {subject.peer.name}/{r.peer.name} = {subject.median / r.median:.2f}x"
        lines.append(line)
    lines.append("")
    lines.append("* spread: (slowest - fastest run) / median.")
    lines.extend(f"* {note}" for note in _footnotes(suite))
    return "\n".join(lines)


def _sizes(sizes: list[int]) -> str:
    lo, hi = min(sizes), max(sizes)
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def log_to_stderr(message: str) -> None:
    sys.stderr.write(message)
    sys.stderr.flush()
