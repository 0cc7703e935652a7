"""Throughput benchmarks for chute against asyncio.Queue, queue.Queue and peers.

Run from the repository root with ``python -m benchmarks`` (``--help`` for the
options; ``--only process`` runs the process scenarios alone, ``--only sqlite``
the SQLite ones). The peers (janus, culsans, aiologic, uvloop, faster-fifo,
aioprocessing, persist-queue, litequeue) come from the optional ``bench``
extra; a missing one is skipped with a note.

- ``peers``: one small adapter per library (factory, async and blocking faces);
- ``memory``: the in-process scenarios, all run by one generic coroutine;
- ``process``: producer processes to a consumer in the benchmark's process,
  for chute's ProcessQueue, multiprocessing.Queue, aioprocessing, faster-fifo;
- ``sqlite``: chute's durable SQLite queue next to persist-queue and litequeue,
  each peer driven through ``asyncio.to_thread`` and, as its best case, directly;
- ``harness``: timing, medians, skipping missing peers, and the tables.
"""
