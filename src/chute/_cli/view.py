"""The live view of a pool at work, drawn with rich (imported here only:
``import chute`` never imports rich).

On a terminal: a few lines redrawn in place (rich's ``Live``), each cut to
the terminal's width, with a progress bar where the total is known and
colour for failures and dead letters. Anywhere else: one plain line every
two seconds. It goes to standard error, as every message of the command
does, so standard output stays for what a command prints as data.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

    from .._contract import QueueStatistics
    from .._workers import WorkerStatistics

#: Seconds between redraws on a terminal, and between plain lines elsewhere.
REDRAW = 0.25
PLAIN_EVERY = 2.0


def console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class _NoTraceback(logging.Filter):
    """The demo's failures are on purpose: their one line says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True


def log_to(out: Console, *, tracebacks: bool = True) -> None:
    """Send the ``chute`` logger's warnings and errors (a handler's
    traceback, say) to standard error: through rich on a terminal, where
    they appear above the live view, and as plain lines elsewhere."""
    logger = logging.getLogger("chute")
    handler: logging.Handler
    if out.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=out, show_time=False, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not tracebacks:
        handler.addFilter(_NoTraceback())
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def say(out: Console, text: str, style: str = "") -> None:
    """A line of the command's own: wrapped to a terminal's width, in colour
    there, plain elsewhere."""
    if out.is_terminal:
        out.print(text, style=style or None, markup=False, highlight=False)
    else:
        print(text, file=sys.stderr, flush=True)


@dataclass
class Numbers:
    """One look at the queue and the pool."""

    queue: QueueStatistics
    pool: WorkerStatistics
    done: int  # handled since the start: acknowledged, or given up on (dead)
    total: int | None  # done plus what is left, where it is known
    final: bool = False  # the pool has stopped: no time left to show


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s} s"


def plain(n: Numbers) -> str:
    """The line written every two seconds where there is no terminal."""
    s, w = n.queue, n.pool
    done = f"{n.done}/{n.total}" if n.total is not None else str(n.done)
    return (
        f"depth {s.size}  in flight {s.in_flight}  delayed {s.delayed}  workers {w.workers}  "
        f"{w.throughput:.0f}/s  p50 {_ms(w.latency_p50)} ms  p95 {_ms(w.latency_p95)} ms  "
        f"done {done}  failed {w.failed}  dead {s.dead_lettered}"
    )


def frame(n: Numbers) -> RenderableType:
    """What a terminal shows: every line cut to its width, never wrapped."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    s, w = n.queue, n.pool

    def line(*parts: tuple[str, str]) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        for i, (part, style) in enumerate(parts):
            if i:
                text.append("  ")
            text.append(part, style=style)
        return text

    rows: list[RenderableType] = [
        line(
            (f"depth {s.size}", "bold"),
            (f"in flight {s.in_flight}", ""),
            (f"delayed {s.delayed}", ""),
            (f"workers {w.workers}", ""),
            (f"{w.throughput:.0f}/s", "cyan"),
            (f"p50 {_ms(w.latency_p50)} ms  p95 {_ms(w.latency_p95)} ms", ""),
        ),
        line(
            (f"done {n.done}", "green"),
            (f"failed {w.failed} (retried {w.retried})", "yellow" if w.failed else ""),
            (f"dead letters {s.dead_lettered}", "bold red" if s.dead_lettered else ""),
        ),
    ]
    if n.total is not None:
        rate = w.throughput
        left = n.total - n.done
        eta = _duration(left / rate) + " left" if rate > 0 and left > 0 and not n.final else ""
        bar = Table.grid(expand=True, padding=(0, 1))
        bar.add_column(ratio=1)
        bar.add_column(no_wrap=True, justify="right")
        bar.add_row(
            ProgressBar(total=max(n.total, 1), completed=n.done, width=None),
            Text(f"{n.done}/{n.total}  {rate:.0f}/s  {eta}".rstrip(), no_wrap=True),
        )
        rows.append(bar)
    return Group(*rows)


class View:
    """Shows ``look()`` until ``close()``: redrawn in place on a terminal,
    a plain line now and then elsewhere."""

    def __init__(self, out: Console, look: Callable[[], Numbers]) -> None:
        self.out = out
        self._look = look
        self._live: Live | None = None
        self._last: Numbers | None = None

    @property
    def terminal(self) -> bool:
        return self.out.is_terminal

    def say(self, text: str, style: str = "") -> None:
        """A line above the live view (or among the plain lines)."""
        say(self.out, text, style)

    def _frame(self) -> RenderableType:
        from rich.text import Text

        n = self._last
        return Text("starting") if n is None else frame(n)

    async def run(self, every: Callable[[Numbers], None] | None = None) -> None:
        """Look, draw and call ``every`` with each look, until cancelled."""
        if self.terminal:
            from rich.live import Live

            self._live = Live(
                get_renderable=self._frame,
                console=self.out,
                auto_refresh=False,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        loop = asyncio.get_running_loop()
        printed = loop.time()
        while True:
            self._last = await asyncio.to_thread(self._look)
            if self._live is not None:
                self._live.refresh()
            elif loop.time() - printed >= PLAIN_EVERY:
                printed = loop.time()
                print(plain(self._last), file=sys.stderr, flush=True)
            if every is not None:
                every(self._last)
            await asyncio.sleep(REDRAW)

    def close(self, final: Numbers | None) -> None:
        """Draw ``final`` once (in place of the live lines on a terminal)."""
        if final is not None:
            final.final = True
            self._last = final
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
        elif final is not None:
            print(plain(final), file=sys.stderr, flush=True)


def look(
    q: Any, workers: Any, *, dead_at_start: int, total: Callable[[Any, int], int | None]
) -> Numbers:
    """One look: the queue's numbers (blocking I/O: call it off the loop)."""
    s, w = q.statistics(), workers.statistics()
    done = w.processed + max(0, s.dead_lettered - dead_at_start)
    return Numbers(s, w, done, total(s, done))
