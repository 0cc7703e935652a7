"""The live view in a real pseudo-terminal of 80 columns, read back through
a terminal emulator (pyte): it fits, redraws in place, says what Ctrl-C
does, and prints its summary once."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from typing import Any

import pytest

import chute
from tests.cli.conftest import chute as run

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

pytestmark = [pytest.mark.timeout(120), pytest.mark.sync_only]

COLUMNS = 80


class Terminal:
    """``chute ARGS`` in a pseudo-terminal COLUMNS wide, shown on a much
    wider emulated screen: a line the command writes too long shows as one."""

    def __init__(self, *args: str, cwd: Any) -> None:
        self.screen = pyte.Screen(200, 200)
        self.stream = pyte.ByteStream(self.screen)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.child = pexpect.spawn(
            sys.executable, ["-m", "chute", *args], dimensions=(40, COLUMNS), env=env, cwd=cwd
        )
        self.child.setecho(False)  # no "^C" echoed by the terminal itself
        self.widest = 0

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display if line.strip()]

    def read(self, until: str | None = None, timeout: float = 30) -> bool:
        """Read the output, until ``until`` is on the screen, or the end.
        Returns False at the end of the output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.2))
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                return False
            finally:
                self.widest = max([self.widest, *map(len, self.lines())])
            if until is not None and any(until in line for line in self.lines()):
                return True
        raise AssertionError(f"{until!r} not on the screen:\n" + "\n".join(self.lines()))

    def pump(self) -> None:
        """Read what there is for a moment (the command never blocks on a full terminal)."""
        try:
            self.stream.feed(self.child.read_nonblocking(65536, timeout=0.05))
        except (pexpect.TIMEOUT, pexpect.EOF):
            pass
        self.widest = max([self.widest, *map(len, self.lines())])

    def finish(self) -> int:
        while self.read():
            pass
        self.child.close()
        assert self.child.exitstatus is not None, self.child.signalstatus
        return int(self.child.exitstatus)


def test_the_demo_fits_80_columns_and_stops_cleanly_on_ctrl_c(tmp_path):
    term = Terminal("demo", "--jobs", "400", "--max", "4", cwd=tmp_path)
    term.read(until="/400")  # the progress bar, with done/total
    term.child.sendintr()  # Ctrl-C, as typed
    assert term.finish() == 0
    text = "\n".join(term.lines())
    assert term.widest <= COLUMNS, text
    assert "stopping: waiting for " in text
    assert "Ctrl-C again to give them back now" in text
    assert text.count("handled ") == 1, text  # one summary
    assert text.count("lost 0") == 1, text
    assert text.count("done ") == 1, text  # the live lines were redrawn in place
    assert "left in the queue 0" not in text  # it stopped before the end


def test_a_worker_gives_its_jobs_back_on_a_second_ctrl_c(tmp_path):
    (tmp_path / "handlers.py").write_text(
        textwrap.dedent(
            """
            import time

            def slow(item):
                time.sleep(60)

            def fail(item):
                raise ValueError(f"cannot handle {item}")
            """
        )
    )
    url = f"sqlite:///{tmp_path}/q.db"
    assert run("put", url, "q", "1", "2", "3").returncode == 0
    term = Terminal("worker", url, "q", "handlers:slow", "--min", "2", "--max", "2", cwd=tmp_path)
    with chute.open(url, "q", create=False) as q:
        deadline = time.monotonic() + 30
        while q.statistics().in_flight < 2:  # both workers hold a job
            assert time.monotonic() < deadline
            term.pump()
        term.child.sendintr()
        term.read(until="Ctrl-C again to give them back now")
        assert any("stopping: waiting for 2 jobs (grace 30 s)" in line for line in term.lines())
        term.child.sendintr()
        assert term.finish() == 0
        s = q.statistics()
        assert (s.size, s.in_flight) == (3, 0)  # given back, nothing lost
    text = "\n".join(term.lines())
    assert term.widest <= COLUMNS, text
    assert "stopping now: giving back 2 jobs in hand" in text
    assert "leaving 2 handlers still running (their jobs were given back)" in text
    assert text.count("processed 0,") == 1, text

    # A handler's failure shows, with its traceback, above the live view.
    assert run("configure", url, "q", "--max-deliveries", "1").returncode == 0
    term = Terminal("worker", url, "q", "handlers:fail", "--until-empty", cwd=tmp_path)
    assert term.finish() == 0
    text = "\n".join(term.lines())
    assert term.widest <= COLUMNS, text
    assert "ValueError: cannot handle 1" in text
    assert "Traceback" in text
    assert text.count("processed 0, failed 3") == 1, text
