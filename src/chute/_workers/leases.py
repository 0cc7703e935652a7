"""Keeping a job's lease for as long as ``Workers`` handles it.

A stored queue hands out each item on a lease of ``visibility_timeout``
seconds; a handler that runs longer would see its item delivered to another
consumer while it still runs (the bug pgqueuer #430 and saq #277 report).
The keeper renews the lease at half its length for as long as the handler
runs: one timer per job, and a round trip only for a handler still running
at half the lease. If the lease is lost anyway (this process stalled past
it, or the store stayed unreachable until it ran out), the keeper cancels
the worker's wait on the handler: the item is someone else's now, and the
worker neither acknowledges it nor gives it back (fencing would refuse
both).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .._exceptions import JobSettledError, LeaseLost

__all__ = ["LeaseKeeper"]

#: The most seconds between two tries while the store cannot be reached.
RETRY = 1.0


class LeaseKeeper:
    """Renews ``job``'s lease of ``lease`` seconds until :meth:`stop`; on
    losing it, sets :attr:`lost` and cancels ``worker``."""

    __slots__ = ("_job", "_lease", "_task", "_timer", "_until", "_worker", "lost")

    def __init__(self, job: Any, lease: float, worker: asyncio.Task[Any]) -> None:
        self._job, self._lease, self._worker = job, lease, worker
        # Counted from now, not from the claim (a moment earlier): the
        # keeper's own clock only decides when to give up on a store that
        # cannot be reached, and the store's refusal is what counts.
        self._until = time.monotonic() + lease
        self._task: asyncio.Future[None] | None = None
        self.lost: LeaseLost | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            lease / 2, self._due
        )

    @staticmethod
    def lease_of(queue: Any) -> float | None:
        """The lease ``queue``'s jobs are handed out with, to keep (a stored
        queue's visibility timeout), or None: a queue without leases.
        Asked once per worker: it is a property of the queue."""
        lease = getattr(queue, "visibility_timeout", None)
        return None if lease is None else float(lease)

    def _due(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._extend())

    async def _extend(self) -> None:
        asked = time.monotonic()
        try:
            await self._job.extend(self._lease)
        except LeaseLost as exc:
            self._lose(exc)
            return
        except JobSettledError:
            return  # settled meanwhile: nothing left to keep
        except Exception as exc:
            # The store is away: try again while the lease may still hold.
            left = self._until - time.monotonic()
            if left <= 0:
                self._lose(LeaseLost(f"the lease ran out while it could not be renewed: {exc}"))
                return
            wait = min(RETRY, left / 2)
        else:
            self._until = asked + self._lease
            wait = self._lease / 2
        self._timer = asyncio.get_running_loop().call_later(wait, self._due)

    def _lose(self, exc: LeaseLost) -> None:
        self.lost = exc
        self._worker.cancel()

    def stop(self) -> None:
        """The handler is done: no more renewals."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
