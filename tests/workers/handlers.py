"""Handlers for Workers(processes=N): importable by the worker processes."""

from __future__ import annotations

import os


def record(job: list[object]) -> None:
    """``job`` is [path, n]: append "n pid" to the file at path."""
    path, n = job
    if n == "fail":
        raise ValueError("this one always fails")
    with open(str(path), "a") as f:
        f.write(f"{n} {os.getpid()}\n")
