"""chute: one queue API for asyncio programs.

Whatever is on the other side (another task, a thread, another event loop,
another process, a crash and restart), the queue keeps ``asyncio.Queue``'s
vocabulary and the same contract. The modules are private; everything
public is importable from ``chute``.
"""

from ._contract import AsyncQueue, DeadLetter, DurableQueue, Job, QueueStatistics, SyncQueue
from ._exceptions import (
    ChuteError,
    JobSettledError,
    LeaseLost,
    QueueEmpty,
    QueueFull,
    QueueNotFound,
    QueueShutDown,
)
from ._memory import LifoQueue, PriorityQueue, Queue
from ._open import open
from ._process import ProcessQueue
from ._schedules import Schedule, Scheduler, cron, every
from ._workers import HandlerFailed, Workers, WorkerStatistics

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncQueue",
    "ChuteError",
    "DeadLetter",
    "DurableQueue",
    "HandlerFailed",
    "Job",
    "JobSettledError",
    "LeaseLost",
    "LifoQueue",
    "PriorityQueue",
    "ProcessQueue",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "QueueNotFound",
    "QueueShutDown",
    "QueueStatistics",
    "Schedule",
    "Scheduler",
    "SyncQueue",
    "WorkerStatistics",
    "Workers",
    "__version__",
    "cron",
    "every",
    "open",
]
