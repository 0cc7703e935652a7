"""How a memory queue's callers wait: the async loops and the blocking ones.

One attempt (``_try_get`` / ``_try_put``) under the mutex; if nothing is
possible, enqueue a waiter of the caller's own kind (a future on its loop, a
lock for a plain thread) and sleep on it. A waiter that gives up (cancelled,
timed out, interrupted) takes its place back, and passes on any promise it
was given, so a call that does not return has changed nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .._contract import check_timeout
from .._exceptions import QueueEmpty, QueueFull
from .._waiters import (
    GET,
    JOIN,
    PUT,
    AsyncWaiter,
    Expired,
    SyncWaiter,
    Waiter,
    WaitKind,
    check_not_on_loop,
    expire,
)
from .state import KeyTaken, NeverFits, PutOptions, QueueState, Refused, TimedOut

__all__ = ["QueueWaits"]

T = TypeVar("T")


class QueueWaits(QueueState[T]):
    """The waiting half of a memory queue (the fast paths live in ``queue.py``)."""

    __slots__ = ()

    async def _get_wait(
        self, timeout: float | None, *, batch: int | None = None, reserve: bool = False
    ) -> Any:
        """Take one item (a job if ``reserve``, a list if ``batch``), waiting."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter: AsyncWaiter | None = None
        expired = timeout == 0
        mutex = self._mutex
        while True:
            # Explicit acquire/refresh/release: ``with self._guard`` costs a
            # Python-level __enter__/__exit__ pair on every wait.
            mutex.acquire()
            try:
                try:
                    got = self._try_get(waiter, reserve=reserve, batch=batch, expired=expired)
                except TimedOut:
                    raise TimeoutError(f"get timed out after {timeout} seconds") from None
                if got is None:
                    front = waiter is not None
                    waiter = AsyncWaiter(loop, 1, GET)
                    if front:
                        self._getters.appendleft(waiter)
                    else:
                        self._getters.append(waiter)
            finally:
                self._refresh()
                mutex.release()
            if got is not None:
                value, wake = got
                self._wake_list(wake)
                return value
            assert waiter is not None
            handle = None if deadline is None else loop.call_at(deadline, expire, waiter.fut)
            try:
                await waiter.fut
            except Expired:
                expired = True
                with self._guard:
                    if not waiter.notified:
                        self._getters.remove(waiter)  # frees nobody: no pass-on
                        raise TimeoutError(f"get timed out after {timeout} seconds") from None
            except BaseException:
                with self._guard:
                    wake = self._abandon(waiter)
                self._wake_list(wake)
                raise
            finally:
                if handle is not None:
                    handle.cancel()

    async def _put_wait(
        self, batch: list[Any], timeout: float | None, options: PutOptions | None = None
    ) -> bool:
        """Store ``batch``, waiting for room; False if its key was in the queue."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiter: AsyncWaiter | None = None
        never: NeverFits | None = None
        refused: Refused | None = None
        taken = False
        expired = timeout == 0
        mutex = self._mutex
        while True:
            # Explicit acquire/refresh/release: ``with self._guard`` costs a
            # Python-level __enter__/__exit__ pair on every wait.
            mutex.acquire()
            try:
                try:
                    wake = self._try_put(waiter, batch, expired=expired, options=options)
                except TimedOut:
                    raise TimeoutError(f"put timed out after {timeout} seconds") from None
                except NeverFits as exc:
                    never, wake = exc, exc.wake  # woken below, with the mutex released
                except KeyTaken as exc:
                    taken, wake = True, exc.wake
                except Refused as exc:
                    refused, wake = exc, exc.wake
                if wake is None:
                    front = waiter is not None
                    waiter = AsyncWaiter(loop, len(batch), PUT)
                    if front:
                        self._putters.appendleft(waiter)
                    else:
                        self._putters.append(waiter)
            finally:
                self._refresh()
                mutex.release()
            if wake is not None:
                self._wake_list(wake)
                if never is not None:
                    raise ValueError(*never.args)
                if refused is not None:
                    raise refused.error
                return not taken
            assert waiter is not None
            handle = None if deadline is None else loop.call_at(deadline, expire, waiter.fut)
            try:
                await waiter.fut
            except Expired:
                expired = True
                with self._guard:
                    wake = None if waiter.notified else self._abandon(waiter)
                if wake is not None:
                    self._wake_list(wake)
                    raise TimeoutError(f"put timed out after {timeout} seconds") from None
            except BaseException:
                with self._guard:
                    wake = self._abandon(waiter)
                self._wake_list(wake)
                raise
            finally:
                if handle is not None:
                    handle.cancel()

    # -- blocking forms for plain threads (used by SyncQueue) ----------------

    def _blocking(
        self,
        attempt: Callable[[Waiter | None, bool], Any],
        *,
        kind: WaitKind,
        need: int,
        timeout: float | None,
        what: str,
    ) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter: SyncWaiter | None = None
        expired = timeout == 0
        waiters = self._getters if kind is GET else self._putters
        mutex = self._mutex
        while True:
            mutex.acquire()
            try:
                got = attempt(waiter, expired)
                if got is None:
                    if waiter is None:
                        check_not_on_loop(what)
                    front = waiter is not None
                    waiter = SyncWaiter(need, kind)
                    if front:
                        waiters.appendleft(waiter)
                    else:
                        waiters.append(waiter)
            finally:
                self._refresh()
                mutex.release()
            if got is not None:
                return got
            assert waiter is not None
            try:
                while True:
                    if deadline is None:
                        woken = waiter.lock.acquire()
                        break
                    # Locks refuse waits beyond TIMEOUT_MAX: wait in slices.
                    remaining = max(0.0, deadline - time.monotonic())
                    woken = waiter.lock.acquire(True, min(remaining, threading.TIMEOUT_MAX))
                    if woken or remaining <= threading.TIMEOUT_MAX:
                        break
            except BaseException:
                with self._guard:
                    wake = self._abandon(waiter)
                self._wake_list(wake)
                raise
            if not woken:
                expired = True
                gave_up: list[Waiter] | None = None
                with self._guard:
                    if not waiter.notified:
                        gave_up = self._abandon(waiter)
                if gave_up is not None:
                    self._wake_list(gave_up)
                    raise TimedOut

    def _get_blocking(
        self,
        timeout: float | None,
        *,
        block: bool,
        batch: int | None = None,
        reserve: bool = False,
    ) -> Any:
        """``q.sync``'s get, get_batch and reserve: ``QueueEmpty`` when it times out."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        if not block:
            timeout = 0
        try:
            value, wake = self._blocking(
                lambda prev, expired: self._try_get(
                    prev, reserve=reserve, batch=batch, expired=expired
                ),
                kind=GET,
                need=1,
                timeout=timeout,
                what="a blocking get",
            )
        except TimedOut:
            raise QueueEmpty(
                "queue is empty" if not timeout else f"get timed out after {timeout} seconds"
            ) from None
        self._wake_list(wake)
        return value

    def _put_blocking(
        self,
        batch: list[Any],
        *,
        block: bool,
        timeout: float | None,
        options: PutOptions | None = None,
    ) -> bool:
        """``q.sync``'s put and put_batch: all or none, ``QueueFull`` when it
        times out; False if its key was in the queue (nothing stored)."""
        if timeout is not None:
            timeout = check_timeout(timeout)
        if not block:
            timeout = 0
        if self._maxsize and len(batch) > self._maxsize:
            raise ValueError(
                f"a batch of {len(batch)} items can never fit a queue of maxsize {self._maxsize}"
            )
        try:
            wake = self._blocking(
                lambda prev, expired: self._try_put(prev, batch, expired=expired, options=options),
                kind=PUT,
                need=len(batch),
                timeout=timeout,
                what="a blocking put",
            )
        except NeverFits as exc:
            self._wake_list(exc.wake)
            raise ValueError(*exc.args) from None
        except KeyTaken as exc:
            self._wake_list(exc.wake)
            return False
        except Refused as exc:
            self._wake_list(exc.wake)
            raise exc.error from None
        except TimedOut:
            raise QueueFull(
                f"queue is full (maxsize={self._maxsize})"
                if not timeout
                else f"put timed out after {timeout} seconds"
            ) from None
        self._wake_list(wake)
        return True

    def _join_blocking(self) -> None:
        with self._guard:
            if not self._unfinished:
                return
            check_not_on_loop("a blocking join")
            waiter = SyncWaiter(0, JOIN)
            self._joiners.append(waiter)
        try:
            waiter.lock.acquire()
        finally:
            with self._guard:
                if waiter in self._joiners:
                    self._joiners.remove(waiter)
