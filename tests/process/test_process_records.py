"""The pickles that put() writes and get() reads without the pickler.

A small int or a bytes is pickled straight into the ring by the fast put,
and read straight out of it by the fast get. Every record is still a
pickle: each path that unpickles (batches, reservations, shutdown, other
versions' records) must read them, and each item must come back equal and
of its own type.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import chute
from chute._process import ProcessQueue

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="ProcessQueue is POSIX-only"),
]


class Bytes(bytes):
    """A subclass: pickled as itself, not as a plain bytes."""


ITEMS: list[Any] = [
    0,
    1,
    -1,
    255,
    65_536,
    2**31 - 1,
    -(2**31),
    2**31,  # just out of int32: the pickler's
    -(2**31) - 1,
    2**70,
    True,  # a bool is no int here
    False,
    b"",
    b"a",
    b"seven b",  # 7 bytes: the first cell's last byte is the STOP
    b"eight by",
    b"\x80\x02J\x00\x00\x00\x00.",  # looks like an int's pickle, is a bytes
    bytes(range(256)) * 4,
    bytearray(b"not bytes"),
    Bytes(b"a subclass"),
    "text",
    (1, b"x"),
    [b"\x80\x03B", 3],
    None,
    1.5,
]


@pytest.fixture
def q() -> Iterator[ProcessQueue[Any]]:
    queue: ProcessQueue[Any] = ProcessQueue(100, capacity=8192)
    yield queue
    queue.close()


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("item", ITEMS, ids=repr)
async def test_each_item_comes_back_equal_and_of_its_type(q, item):
    await q.put(item)
    q.sync.put(item)
    q.put_nowait(item)
    got = [await q.get(), q.sync.get(), q.get_nowait()]
    assert all(same(x, item) for x in got), got


async def test_fast_records_are_pickles_every_other_path_reads(q):
    items = [5, -7, b"abc", bytes(1_000), 2**40, "s"]
    for x in items:
        q.sync.put(x)
    assert await q.get_batch(100) == items
    for x in items:
        await q.put(x)
    assert q.sync.get_batch(100) == items
    for x in items:
        await q.put(x)
    for x in items:
        async with q.reserve() as job:
            assert same(job.item, x)
    for x in items:
        await q.put(x)
    assert q.shutdown(immediate=True) == items


async def test_records_the_pickler_wrote_are_read_by_the_fast_get(q):
    # A batch is pickled by the pickler (HIGHEST_PROTOCOL): the fast get
    # must not take those for its own forms, nor its forms for others.
    items = [3, b"xyz", 2**33, Bytes(b"q"), b""]
    await q.put_batch(items)
    assert [await q.get() for _ in items] == items
    q.sync.put_batch(items)
    got = [q.sync.get() for _ in items]
    assert all(same(a, b) for a, b in zip(got, items, strict=True))


async def test_a_fast_item_waits_for_room_and_goes_in_whole(q):
    small: ProcessQueue[Any] = ProcessQueue(1, capacity=4096)
    try:
        await small.put(b"first")
        with pytest.raises(TimeoutError):
            await small.put(7, timeout=0.01)
        with pytest.raises(chute.QueueFull):
            small.put_nowait(b"second")
        assert small.qsize() == 1
        waiting = asyncio.ensure_future(small.put(b"second", timeout=10))
        await asyncio.sleep(0)  # it found no room: it waits
        assert not waiting.done()
        assert await small.get() == b"first"
        await waiting
        assert same(await small.get(), b"second")
    finally:
        small.close()


async def test_bytes_too_large_for_the_ring_are_refused_at_put():
    small: ProcessQueue[Any] = ProcessQueue(capacity=4096)
    try:
        with pytest.raises(ValueError, match="ring holds at most"):
            await small.put(bytes(small._capacity))
        assert small.qsize() == 0
        largest = bytes(small._bytes_max)
        await small.put(largest)
        assert await small.get() == largest
    finally:
        small.close()


async def test_fast_records_cross_the_ring_end(q):
    # Records of every size past the ring's end and round again: the fast
    # put hands a record that would cross it to the general path, whose
    # copy of the fast pickle the fast get reads back.
    sent: list[Any] = []
    got: list[Any] = []
    for i in range(400):
        item: Any = bytes([i % 256]) * (i % 300) if i % 3 else i * 1_000_003 % 2**31
        sent.append(item)
        while True:
            try:
                q.put_nowait(item)
                break
            except chute.QueueFull:  # by count or by bytes: make room
                got.append(await q.get())
        if i % 2:
            got.append(await q.get())
    while q.qsize():
        got.append(q.sync.get())
    assert all(same(a, b) for a, b in zip(got, sent, strict=True))


def test_the_forms_are_the_pickles_of_their_items(q):
    for item in (0, -1, 2**31 - 1, -(2**31), b"", b"abc", bytes(300)):
        record = q._record(item)
        assert same(pickle.loads(record), item)
