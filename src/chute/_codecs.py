"""Codecs: how durable and distributed transports turn items into bytes.

JSON by default: safe to decode whoever wrote the queue, and readable from
other languages. Pickle only when asked for by name, since whoever can
write to the queue can then run code in every consumer. Any object with
``encode(item) -> bytes`` and ``decode(data) -> item`` is accepted too.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

from ._exceptions import ChuteError


@runtime_checkable
class Codec(Protocol):
    """Turns items into bytes and back; ``encode`` raises on what it cannot encode."""

    def encode(self, item: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


_ZERO = ord("0")


class JsonCodec:
    """JSON (UTF-8, compact). Tuples come back as lists; NaN and infinities
    are refused, as strict JSON has no words for them."""

    name = "json"

    def __init__(self) -> None:
        # Made once: json.dumps() with any option builds a new encoder per call.
        self._encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
        self._decode = json.JSONDecoder().decode

    def encode(self, item: Any) -> bytes:
        if type(item) is int:
            # The commonest item, as JSON writes it, without the encoder's
            # set-up for each call (json makes its C encoder anew every
            # time): 4-5% of single items' time end to end on SQLite.
            return b"%d" % item
        return self._encode(item).encode()

    def decode(self, data: bytes) -> Any:
        if data.isdigit() and (data[0] != _ZERO or len(data) == 1):
            return int(data)  # a non-negative int, as JSON reads it (no leading zeros)
        return self._decode(data.decode())


class PickleCodec:
    """Pickle: any picklable object, for queues written only by trusted code."""

    name = "pickle"

    def encode(self, item: Any) -> bytes:
        return pickle.dumps(item, pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)


_BY_NAME: dict[str, type[JsonCodec] | type[PickleCodec]] = {
    "json": JsonCodec,
    "pickle": PickleCodec,
}


def get_codec(codec: object) -> Codec:
    """A codec from a name (``"json"``, ``"pickle"``) or a codec object."""
    if isinstance(codec, str):
        try:
            return _BY_NAME[codec]()
        except KeyError:
            known = ", ".join(repr(n) for n in _BY_NAME)
            raise ValueError(f"unknown codec {codec!r}: use {known} or a codec object") from None
    if isinstance(codec, Codec):
        return codec
    raise TypeError(
        "codec must be 'json', 'pickle' or an object with encode(item) -> bytes "
        f"and decode(data) -> item, not {type(codec).__name__}"
    )


def encode_item(codec: Codec, item: Any) -> bytes:
    """Encode, turning any failure into one clear ``TypeError`` or ``ValueError``."""
    try:
        data = codec.encode(item)
    except (TypeError, ValueError, pickle.PicklingError, AttributeError, RecursionError) as exc:
        kind = TypeError if isinstance(exc, (TypeError, pickle.PicklingError)) else ValueError
        name = getattr(codec, "name", type(codec).__name__)
        raise kind(f"the {name} codec cannot encode {type(item).__name__} item: {exc}") from exc
    if not isinstance(data, bytes):
        raise TypeError(f"codec.encode() must return bytes, not {type(data).__name__}")
    return data


def undecodable(queue: str, codec: Codec, error: BaseException | None) -> ChuteError:
    """The error of a get whose item the codec could not decode."""
    name = getattr(codec, "name", type(codec).__name__)
    return ChuteError(
        f"queue {queue!r}: an item could not be decoded with the {name} codec "
        f"({error!r}); it was moved to the dead letters"
    )
