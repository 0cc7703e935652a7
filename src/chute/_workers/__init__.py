"""``Workers``: a pool of consumers on any chute queue (``pool.py``), how it
logs failures without flooding (``failures.py``), and the worker processes
of ``processes=N`` (``processes.py``)."""

from .failures import REPEAT_EVERY, logger
from .pool import Workers, WorkerStatistics
from .processes import HandlerFailed, RemoteTraceback

__all__ = [
    "REPEAT_EVERY",
    "HandlerFailed",
    "RemoteTraceback",
    "WorkerStatistics",
    "Workers",
    "logger",
]
