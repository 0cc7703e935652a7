"""ProcessQueue: one queue in shared memory, for every process on the machine.

The package, one concern a module, each a layer of one class (from the
bottom: every layer reads the fields declared in ``handle.py`` and calls
the layers below it):

- ``layout.py``: where everything is in the shared file (``Header``,
  ``BellRow``, the ring's record format);
- ``handle.py``: this process's handle: fields, mapping, what it must
  release, fork children;
- ``ring.py``: records stored and taken, lock held;
- ``bells.py``: the bell table and the pipes that wake sleepers;
- ``lock.py``: the cross-process lock and its takeover from the dead;
- ``dead.py``: dead letters, and decode-and-bury;
- ``arena.py``, ``envelope.py``, ``held.py``: reserved items kept in a
  file of the reserving process's, given back if it dies;
- ``waits.py``: spin, then sleep on a bell, async and blocking;
- ``settings.py``: sizes, bounds and statistics, read from the header;
- ``queue.py``: ``ProcessQueue``, the public face, fast paths inline;
- ``job.py``, ``sync.py``: jobs and reservations; ``q.sync``.

Layers of one object rather than objects that hold each other: they share
one set of shared-memory views under one lock, and the fast paths read them
from ``self`` (an object hop per locked section costs at a microsecond a put).
"""

# Envelopes of given-back items pickle this function by this modules name
# (the name it had before the package split): processes of either version
# read each others.
from .envelope import _carried_item as _carried_item
from .job import ProcessJob, ProcessReservation, ProcessSyncReservation
from .queue import ProcessQueue
from .sync import ProcessSyncQueue

__all__ = [
    "ProcessJob",
    "ProcessQueue",
    "ProcessReservation",
    "ProcessSyncQueue",
    "ProcessSyncReservation",
]
