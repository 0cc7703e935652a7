"""An item given back with the error it last failed with: the envelope.

Only given-back records carry one (their length word has the ``CARRIES``
flag); a plain get unpickles it to the item alone, a reservation or a dead
letter takes the error out too.
"""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

from .._contract import ErrorInfo
from .layout import CARRIES, DELIVERIES, pad

__all__ = ["Carried", "unwrap", "wrap"]

PICKLED_AS = "chute._process"


class Carried:
    """An item's pickle with the error it last failed with (JSON): pickled,
    it unpickles to the item alone (``_carried_item``), so a plain get of a
    given-back item needs no special case; ``unwrap`` takes both out."""

    __slots__ = ("data", "error")

    def __init__(self, data: bytes, error: str) -> None:
        self.data = data
        self.error = error

    def __reduce__(self) -> tuple[Any, tuple[bytes, str]]:
        return (_carried_item, (self.data, self.error))


def _carried_item(data: bytes, error: str) -> Any:
    return pickle.loads(data)


# Pickled by this name, as before the package split, so that processes of
# either version read each other's envelopes (``chute._process`` re-exports it).
_carried_item.__module__ = PICKLED_AS


class Unwrapper(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (PICKLED_AS, "_carried_item"):
            return lambda data, error: (data, error)
        raise pickle.UnpicklingError(f"not an envelope: {module}.{name}")


def unwrap(wrapped: bytes) -> tuple[bytes, ErrorInfo | None]:
    """The item's pickle and its last error, out of an envelope (Carried)."""
    data, error = Unwrapper(io.BytesIO(wrapped)).load()
    return data, ErrorInfo.from_dict(json.loads(error))


def wrap(data: bytes, deliveries: int, error: ErrorInfo, capacity: int) -> tuple[bytes, int]:
    """The record that gives ``data`` back with its last error: an envelope
    that unpickles to the item itself (so a plain get needs nothing
    special), flagged with CARRIES. Without the traceback, or without
    the error, where a ring of ``capacity`` bytes could never hold it."""
    for info in (error, ErrorInfo(error.type, error.message, "")):
        wrapped = pickle.dumps(Carried(data, json.dumps(info.to_dict())), pickle.HIGHEST_PROTOCOL)
        if 8 + pad(len(wrapped)) <= capacity:
            return wrapped, (deliveries & DELIVERIES) | CARRIES
    return data, deliveries & DELIVERIES
