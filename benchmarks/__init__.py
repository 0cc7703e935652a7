"""Throughput benchmarks for chute against asyncio.Queue, queue.Queue and peers.

Run from the repository root with ``python -m benchmarks`` (``--help`` for the
options; ``--only process`` runs the process scenarios alone). The peers
(janus, culsans, aiologic, uvloop, faster-fifo, aioprocessing) come from the
optional ``bench`` extra; a missing one is skipped with a note.

- ``peers``: one small adapter per library (factory, async and blocking faces);
- ``memory``: the in-process scenarios, all run by one generic coroutine;
- ``process``: producer processes to a consumer in the benchmark's process,
  for chute's ProcessQueue, multiprocessing.Queue, aioprocessing, faster-fifo;
- ``harness``: timing, medians, skipping missing peers, and the tables.
"""
