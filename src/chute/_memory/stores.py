"""The stores behind the memory queues: FIFO (a deque), LIFO and priority,
and the ranked FIFO a ``chute.Queue`` becomes at its first ``put(priority=)``.

Every store answers ``append`` (put), ``popleft`` (the next to get) and
``appendleft`` (give an item back in front, by the queue's own order).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable
from typing import Any

from .._contract import ErrorInfo

__all__ = ["Heap", "Ranked", "Returned", "Stack"]


class Returned:
    """An item stored with more than itself: given back by a failed
    reservation (its delivery count and the error it last failed with, kept
    for the dead letters), or put with a ``key`` or a ``priority``.

    Stored in the queue itself so the queue's order decides where it goes:
    the front of a FIFO, the top of a LIFO, its place by priority in a heap.
    A get unwraps it on the general path (the fast paths take only plain
    items: the queue counts the wrapped ones it holds).
    """

    __slots__ = ("deliveries", "error", "item", "key", "priority")

    def __init__(
        self,
        item: Any,
        deliveries: int,
        error: ErrorInfo | None,
        key: str | None = None,
        priority: int = 0,
    ) -> None:
        self.item = item
        self.deliveries = deliveries
        self.error = error
        self.key = key
        self.priority = priority

    def __lt__(self, other: object) -> bool:
        return bool(self.item < (other.item if isinstance(other, Returned) else other))

    def __gt__(self, other: object) -> bool:
        return bool(self.item > (other.item if isinstance(other, Returned) else other))


class Stack(deque[Any]):
    """LIFO store: its "left" end, where gets take from, is the top."""

    __slots__ = ()
    popleft = deque.pop
    appendleft = deque.append


class Heap(list[Any]):
    """Priority store: a binary heap, lowest item first.

    Its own sift loops compare before they move anything and undo their moves
    if a comparison raises (items that cannot be ordered, such as ``(1, {})``
    against ``(1, {})``): the queue is left as it was, and the error reaches
    the caller. ``heapq`` would leave the heap changed.
    """

    __slots__ = ()

    def append(self, item: Any) -> None:
        list.append(self, item)
        pos = len(self) - 1
        path = [pos]
        try:
            while pos > 0:
                parent = (pos - 1) >> 1
                if item < self[parent]:
                    self[pos] = self[parent]
                    pos = parent
                    path.append(pos)
                else:
                    break
        except BaseException:
            # Each move copied self[path[i+1]] down to path[i]; undo from the
            # top of the path, then drop the new slot.
            for i in range(len(path) - 2, 0, -1):
                self[path[i]] = self[path[i - 1]]
            list.pop(self)
            raise
        self[pos] = item

    def popleft(self) -> Any:
        last = list.pop(self)
        if not self:
            return last
        top = self[0]
        n = len(self)
        pos = 0
        path = [0]
        try:
            while True:
                child = 2 * pos + 1
                if child >= n:
                    break
                right = child + 1
                if right < n and not self[child] < self[right]:
                    child = right
                if self[child] < last:
                    self[pos] = self[child]
                    pos = child
                    path.append(pos)
                else:
                    break
        except BaseException:
            # Each move copied self[path[k+1]] up to path[k]; undo from the
            # bottom, then put the top and the last item back.
            for k in range(len(path) - 1, 0, -1):
                self[path[k]] = self[path[k - 1]]
            self[0] = top
            list.append(self, last)
            raise
        self[pos] = last
        return top

    appendleft = append


class Ranked(list[Any]):
    """A FIFO by ``put(priority=)``: lower priorities first, equal ones in
    the order they were put; a given-back item goes in front of its equals.

    A heap of ``(priority, order, item)``: the order numbers are unique, so
    items themselves are never compared (any item can be stored).
    """

    __slots__ = ()
    _order = itertools.count()  # puts: rising, behind every equal priority
    _front = itertools.count(-1, -1)  # give-backs: falling, ahead of them all

    @classmethod
    def of(cls, items: Iterable[Any]) -> Ranked:
        """The ranked store of a FIFO's ``items``, in their order."""
        ranked = cls()
        for x in items:
            ranked.append(x)
        return ranked

    def append(self, x: Any) -> None:
        priority = x.priority if type(x) is Returned else 0
        heapq.heappush(self, (priority, next(self._order), x))

    def appendleft(self, x: Any) -> None:
        priority = x.priority if type(x) is Returned else 0
        heapq.heappush(self, (priority, next(self._front), x))

    def popleft(self) -> Any:
        return heapq.heappop(self)[2]
