"""A getter's look that found nothing and a shutdown that the queue's
thread ran in the same transaction (it groups the calls waiting for it):
the shutdown rings before the getter gets in line, so the getter must
not trust that look, and looks once more."""

from __future__ import annotations

import asyncio

import pytest

import chute

pytestmark = pytest.mark.timeout(120)


async def test_a_getter_whose_empty_look_shared_a_commit_with_a_shutdown_is_woken(tmp_path):
    # The get's claim is sent to the queue's thread; the blocking shutdown,
    # sent while the loop waits for it, most often joins the same group.
    # Before the fix a getter slept through it within a few tries of 100.
    for i in range(100):
        async with chute.open(f"sqlite:///{tmp_path}/q{i}.db", "q") as q:
            getter = asyncio.create_task(q.get())
            await asyncio.sleep(0)  # the getter's claim is on its way
            q.shutdown()
            with pytest.raises(chute.QueueShutDown):
                await asyncio.wait_for(getter, 5)
