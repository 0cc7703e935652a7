"""Throughput benchmarks for chute against asyncio.Queue, queue.Queue and peers.

Run from the repository root with ``python -m benchmarks`` (``--help`` for the
options). The peers (janus, culsans, aiologic, uvloop) come from the optional
``bench`` extra; a missing one is skipped with a note.

- ``peers``: one small adapter per library (factory, async and blocking faces);
- ``memory``: the in-process scenarios, all run by one generic coroutine;
- ``harness``: timing, medians, skipping missing peers, and the tables.
"""
