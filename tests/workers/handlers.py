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


def die_once(job: list[object]) -> None:
    """[path, n]: the first call (marked by path + ".died") kills its process."""
    path, n = job
    marker = f"{path}.died"
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker process dies, holding this item
    with open(str(path), "a") as f:
        f.write(f"{n} {os.getpid()}\n")
