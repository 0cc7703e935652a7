"""chute: one queue API for asyncio programs.

Whatever is on the other side (another task, a thread, another event loop),
the queue keeps ``asyncio.Queue``'s vocabulary and the same contract.
"""

from __future__ import annotations

from ._contract import AsyncQueue, Job, QueueStatistics, SyncQueue
from ._exceptions import ChuteError, JobSettledError, QueueEmpty, QueueFull, QueueShutDown
from ._memory import LifoQueue, MemoryJob, PriorityQueue, Queue, Reservation, SyncReservation
from ._memory import SyncQueue as MemorySyncQueue

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncQueue",
    "ChuteError",
    "Job",
    "JobSettledError",
    "LifoQueue",
    "MemoryJob",
    "MemorySyncQueue",
    "PriorityQueue",
    "Queue",
    "QueueEmpty",
    "QueueFull",
    "QueueShutDown",
    "QueueStatistics",
    "Reservation",
    "SyncQueue",
    "SyncReservation",
    "__version__",
]
