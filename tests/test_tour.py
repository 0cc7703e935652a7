"""The tour, ``python -m chute tour``, works and loses nothing."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from chute._cli import tour

pytestmark = pytest.mark.timeout(60)


def test_tour_processes_every_item(capsys):
    tour.main()
    out = capsys.readouterr().out
    assert "processed 60 items" in out
    assert re.search(r"put 60, handed out 6[0-9] \(retries included\)", out)
    assert out.rstrip().endswith("lost 0")
    assert "succeeded on delivery 2" in out


def test_python_dash_m_chute_runs():
    done = subprocess.run(
        [sys.executable, "-m", "chute", "tour"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "lost 0" in done.stdout
