"""A claim looks only at the ready items while this process knows that no
lease, delay or delayed put can have run out yet. What it knows must
follow every change: a lease made shorter, another process's lease, a
claim rolled back. Each test fails (its get times out) if the claim
trusts a time it should have forgotten."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

import chute
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(120)

# The other process: takes the one item on a short lease and dies holding it.
_HOLD_AND_DIE = """
import os, sys, chute
with chute.open(sys.argv[1], "q", visibility_timeout=0.2) as q:
    job = q.sync.reserve(timeout=10).__enter__()
    print(job.item, flush=True)
    os._exit(0)
"""


async def test_a_lease_made_shorter_runs_out_when_it_says(tmp_path):
    async with chute.open(f"sqlite:///{tmp_path}/q.db", "q", visibility_timeout=60) as q:
        await q.put("a")
        await q.put("b")
        async with q.reserve() as first:  # known: nothing due for 60 s
            assert first.item == "a"
        job = await q.reserve()
        assert job.item == "b"
        await job.extend(0.1)
        again = await asyncio.wait_for(q.reserve(), 10)  # not 60 s
        assert (again.item, again.deliveries) == ("b", 2)
        await again.aack()


async def test_a_lease_another_process_took_runs_out_here(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    async with chute.open(url, "q", visibility_timeout=60) as q:
        await q.put("mine")
        async with q.reserve() as job:  # known: nothing due for 60 s
            assert job.item == "mine"
        await q.put("theirs")
        child = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _HOLD_AND_DIE, url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.stdout.strip() == "theirs", child.stderr
        await asyncio.sleep(0.3)  # its lease of 0.2 s has run out
        assert await q.aqsize() == 1
        assert await q.get(timeout=0) == "theirs"


async def test_a_claim_rolled_back_leaves_nothing_to_trust(tmp_path):
    # A claim that re-leased an item whose lease ran out, then was rolled
    # back (its caller was cancelled while it ran), must not leave behind
    # the time it noted: the item is claimable again at once.
    url = f"sqlite:///{tmp_path}/q.db"
    async with (
        chute.open(url, "q", visibility_timeout=0.1) as short,
        chute.open(url, "q", visibility_timeout=60) as q,
    ):
        await short.put("x")
        await short.reserve()  # and never settled: its lease runs out
        await asyncio.sleep(0.2)
        db = q._backend._db  # the file's thread, shared by both queues
        gate, in_group, go_on = threading.Event(), threading.Event(), threading.Event()
        db.submit(lambda c: gate.wait(10))  # keeps the thread busy meanwhile
        db.submit(lambda c: (in_group.set(), go_on.wait(10)))  # then runs first in a group...
        getter = asyncio.ensure_future(q.reserve())  # ...whose next call is this claim
        await wait_until(lambda: len(db._inbox) == 2)
        gate.set()
        await asyncio.to_thread(in_group.wait, 10)  # the claim is taken, about to run
        getter.cancel()
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await getter
        async with asyncio.timeout(10):  # not the 60 s of the rolled-back lease
            job = await q.reserve()
        assert (job.item, job.deliveries) == ("x", 2)
        await job.aack()
