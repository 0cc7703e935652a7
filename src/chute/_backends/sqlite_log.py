"""Copying a SQLite file's write-ahead log back into the file (checkpoints),
for the file's thread (``sqlite_db.Database``).

SQLite's own checkpoint, made by whichever commit finds the log long, is
turned off (``sqlite_file``): a loop's commit must not copy the log, nor
sync the file. The thread copies it instead, on a connection of its own,
while loops go on committing on theirs: timed, one producer and four
consumers on one loop left it idle through every checkpoint made holding
the file (2-5 ms each), 18% of its time. Copied alongside alone, the log
would grow without end: only a checkpoint that copies all of it, with no
commit in between, lets the next commit write it from the start.
"""

from __future__ import annotations

import sqlite3
import threading

from .sqlite_file import DURABILITY, _uri

__all__ = ["CHECKPOINT_BYTES", "LogCopier"]

#: The log's length from which it is made to start again from its beginning.
CHECKPOINT_BYTES = 4 << 20
#: Before it starts again, it is copied alongside at most this many times,
#: until the loops added no more than a few pages meanwhile (a commit of a
#: single item adds about five).
COPY_ROUNDS, FEW_FRAMES = 4, 32


class LogCopier:
    """The checkpoints of one file, made by its thread."""

    def __init__(self, path: str, durability: str) -> None:
        self._path = path
        self._durability = durability
        self._conn: sqlite3.Connection | None = None  # made at the first copy
        self._frame_bytes = 0  # the size of a page in the log, with its header

    def copy_back(self, conn: sqlite3.Connection, file_lock: threading.Lock) -> None:
        """Copy the log into the file alongside the loops' commits. Once it
        is ``CHECKPOINT_BYTES`` long, copy again what the loops added
        meanwhile, until that is a few commits, and the rest on ``conn``
        (the file's connection), holding ``file_lock`` (the file): the next
        commit then finds the log copied back and writes it from the start."""
        if self._conn is None:
            # (Read and write, never create: a file removed meanwhile is not made again.)
            self._conn = sqlite3.connect(_uri(self._path, "rw"), uri=True, isolation_level=None)
            # Its copy is synced as the queue's own commits are.
            self._conn.execute(f"PRAGMA synchronous={DURABILITY[self._durability]}")
            self._frame_bytes = self._conn.execute("PRAGMA page_size").fetchone()[0] + 24
        copied = 0
        for _ in range(COPY_ROUNDS):
            busy, frames, _ = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not copied and frames * self._frame_bytes < CHECKPOINT_BYTES:
                return  # not long enough yet to start again
            if busy or frames - copied <= FEW_FRAMES:
                break
            copied = frames
        with file_lock:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
