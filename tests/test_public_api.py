"""The public surface is what ``chute.__all__`` lists, and nothing leaks."""

from __future__ import annotations

import asyncio
import queue

import pytest

import chute

pytestmark = pytest.mark.timeout(10)


def test_all_names_exist_and_are_public():
    for name in chute.__all__:
        assert hasattr(chute, name), name
    assert sorted(chute.__all__) == sorted(set(chute.__all__))
    # Nothing public besides __all__ (the modules themselves are private),
    # except the modules of the extras, imported by name where installed
    # (``import chute.metrics``), never by ``import chute``.
    extras = {"metrics", "dashboard"}
    public = {n for n in dir(chute) if not n.startswith("_")} - extras
    assert public == set(chute.__all__) - {"__version__"}


def test_import_chute_does_not_import_the_extras():
    import subprocess
    import sys

    code = (
        "import chute, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'prometheus_client') or m in ('chute.metrics', 'chute.dashboard')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_exceptions_subclass_the_stdlib_ones():
    assert issubclass(chute.QueueEmpty, asyncio.QueueEmpty)
    assert issubclass(chute.QueueEmpty, queue.Empty)
    assert issubclass(chute.QueueFull, asyncio.QueueFull)
    assert issubclass(chute.QueueFull, queue.Full)
    for exc in (chute.QueueEmpty, chute.QueueFull, chute.QueueShutDown, chute.JobSettledError):
        assert issubclass(exc, chute.ChuteError)
    if hasattr(asyncio, "QueueShutDown"):
        assert issubclass(chute.QueueShutDown, asyncio.QueueShutDown)
        assert issubclass(chute.QueueShutDown, queue.ShutDown)


def test_queues_are_generic():
    q: chute.Queue[int] = chute.Queue[int]()
    assert isinstance(q, chute.Queue)
    assert chute.PriorityQueue[tuple[int, str]] is not None


def test_py_typed_is_shipped():
    from importlib.resources import files

    assert files("chute").joinpath("py.typed").is_file()


def test_the_tests_exercise_the_working_tree():
    # Not an installed copy: pytest puts src/ first (pyproject's pythonpath).
    import os

    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    assert os.path.abspath(chute.__file__).startswith(os.path.join(src, "chute"))
