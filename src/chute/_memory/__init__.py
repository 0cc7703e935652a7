"""The in-process queues: safe from any thread and any event loop.

One mutex guards everything. A caller that must wait enqueues a waiter of
its own kind (a future on its own loop, or a lock for a plain thread) in one
FIFO shared by async and sync callers; whoever makes progress possible
*notifies* the first waiter and wakes it after releasing the mutex. Items
never leave the queue except in the caller that returns them, under the
mutex, so a get or put that is cancelled or times out has either completed or
left the queue unchanged.

Notified-but-not-yet-running waiters are counted (``_get_promised``,
``_put_promised``, which also holds the room of items put with a delay and
not due yet) so that a blocking call arriving later queues behind them
instead of taking what was promised; the ``*_nowait`` forms never wait and
take what is there.

The package, one concern a module:

- ``queue.py``: ``Queue``, ``LifoQueue``, ``PriorityQueue``, the public face
  with the measured fast paths inline;
- ``waits.py``: how a caller waits (async and blocking loops, giving up);
- ``state.py``: the fields, and how items and promises move under the mutex;
- ``stores.py``: the FIFO, LIFO and priority stores, and the ranked FIFO
  that ``put(priority=)`` turns a ``Queue``'s store into;
- ``alarms.py``: the process's one alarm thread (delayed puts and nacks);
- ``job.py``: ``reserve()``'s job and reservations;
- ``sync.py``: ``queue.sync``, the ``queue.Queue`` API for plain threads.

They are one class hierarchy (``QueueState`` <- ``QueueWaits`` <- ``Queue``)
rather than objects that hold each other: every part reads the same fields
under the same mutex, and the fast paths read them straight from ``self``.
"""

from .job import MemoryJob, Reservation, SyncReservation
from .queue import LifoQueue, PriorityQueue, Queue
from .sync import SyncQueue

__all__ = [
    "LifoQueue",
    "MemoryJob",
    "PriorityQueue",
    "Queue",
    "Reservation",
    "SyncQueue",
    "SyncReservation",
]
