"""A SQLite queue file: its schema and migrations, and opening it.

Opening checks that the file is chute's (its application id) and of a
schema this chute reads, sets the write-ahead log and the durability, and
creates or migrates the schema in one transaction. The connection's
checkpoints are left to the thread that owns it (``sqlite_db``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import urllib.parse

from .._exceptions import ChuteError, QueueNotFound

SCHEMA_VERSION = 4
APPLICATION_ID = 0x63687574  # "chut": marks a file as chute's
#: Milliseconds the file's thread waits for another process's write lock.
BUSY_MS = 60_000
DURABILITY = {"crash": "NORMAL", "power": "FULL"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chute_queue (
    name TEXT PRIMARY KEY,
    maxsize INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    max_deliveries INTEGER,
    stored INTEGER NOT NULL DEFAULT 0,
    unfinished INTEGER NOT NULL DEFAULT 0,
    total_put INTEGER NOT NULL DEFAULT 0,
    total_got INTEGER NOT NULL DEFAULT 0,
    peak INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS chute_item (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    data BLOB NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL DEFAULT 0,
    token INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    key TEXT,
    ready_at REAL
);
CREATE INDEX IF NOT EXISTS chute_item_order ON chute_item (queue, priority, id) WHERE leased = 0;
CREATE INDEX IF NOT EXISTS chute_item_leased ON chute_item (queue, visible_at) WHERE leased = 1;
CREATE INDEX IF NOT EXISTS chute_item_delayed ON chute_item (queue, visible_at) WHERE leased = 2;
CREATE INDEX IF NOT EXISTS chute_item_scheduled ON chute_item (queue, visible_at) WHERE leased = 3;
CREATE UNIQUE INDEX IF NOT EXISTS chute_item_key ON chute_item (queue, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS chute_dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    data BLOB NOT NULL,
    deliveries INTEGER NOT NULL,
    died_at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT 'failed',
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS chute_dead_queue ON chute_dead (queue);
CREATE TABLE IF NOT EXISTS chute_mark (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    slot INTEGER NOT NULL,
    PRIMARY KEY (queue, name)
);
"""

#: How a file of each older schema is brought up to date, in place (one
#: transaction, so a file is either migrated or left as it was). Schema 1
#: kept no errors and no reasons: its dead letters list with
#: reason "failed" and no error; its items given back with a delay look like
#: leases until they come due. Schema 2 had no priorities, keys, delayed
#: puts or schedules: its items get priority 0 and no key. Schema 3 kept no
#: put times: its items count as put when the file was migrated (``@NOW``,
#: a constant default: no row is rewritten), so that the age of the oldest
#: ready item is never more than it was.
_MIGRATIONS = {
    1: """
ALTER TABLE chute_item ADD COLUMN last_error TEXT;
ALTER TABLE chute_dead ADD COLUMN reason TEXT NOT NULL DEFAULT 'failed';
ALTER TABLE chute_dead ADD COLUMN last_error TEXT;
CREATE INDEX IF NOT EXISTS chute_item_delayed ON chute_item (queue, visible_at) WHERE leased = 2;
""",
    2: """
ALTER TABLE chute_item ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE chute_item ADD COLUMN key TEXT;
DROP INDEX IF EXISTS chute_item_ready;
CREATE INDEX IF NOT EXISTS chute_item_order ON chute_item (queue, priority, id) WHERE leased = 0;
CREATE INDEX IF NOT EXISTS chute_item_scheduled ON chute_item (queue, visible_at) WHERE leased = 3;
CREATE UNIQUE INDEX IF NOT EXISTS chute_item_key ON chute_item (queue, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS chute_mark (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    slot INTEGER NOT NULL,
    PRIMARY KEY (queue, name)
);
""",
    3: """
ALTER TABLE chute_item ADD COLUMN ready_at REAL DEFAULT @NOW;
UPDATE chute_item SET ready_at = visible_at WHERE leased = 3;
""",
}


def _translate(exc: BaseException, path: str) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        text = str(exc)
        if "disk is full" in text or "database or disk is full" in text:
            return ChuteError(f"the disk holding {path} is full: nothing was stored")
        if "readonly" in text or "read-only" in text:
            return ChuteError(f"{path} is read-only here: nothing was stored")
        return ChuteError(f"SQLite error on {path}: {text}")
    return exc


def _connect(path: str, durability: str, create: bool = True) -> sqlite3.Connection:
    folder = os.path.dirname(os.path.abspath(path))
    if not create and not os.path.exists(path):
        raise QueueNotFound(f"no file {path}")
    if not os.path.isdir(folder):
        raise ChuteError(f"cannot open {path}: the folder {folder} does not exist")
    if os.path.exists(path):
        if not os.path.isfile(path):
            raise ChuteError(f"cannot open {path}: it is not a file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ChuteError(f"cannot open {path}: it is not readable and writable by this user")
    elif not os.access(folder, os.W_OK):
        raise ChuteError(f"cannot create {path}: the folder {folder} is read-only for this user")
    try:
        # Without create, mode=rw: a file removed since the look above is
        # not made again.
        conn = sqlite3.connect(
            path if create else _uri(path, "rw"),
            timeout=BUSY_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
            uri=not create,
        )
    except sqlite3.Error as exc:
        if not create and not os.path.exists(path):
            raise QueueNotFound(f"no file {path}") from None
        raise ChuteError(f"cannot open {path}: {exc}") from exc
    try:
        _prepare(conn, path, durability)
    except BaseException:
        conn.close()
        raise
    return conn


def _uri(path: str, mode: str) -> str:
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}"


def _check_file(conn: sqlite3.Connection, path: str) -> int:
    """The schema version of a chute file (0: a new, empty file); refuses
    what is not one, or what a newer chute wrote."""
    try:
        # One statement, so one snapshot: read apart, a process creating the
        # file could commit in between (tables present, application id not
        # yet read as set) and the file would be refused as someone else's.
        app_id, version, tables = conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id),"
            " (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_master)"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise ChuteError(f"{path} is not a SQLite database ({exc})") from exc
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise ChuteError(f"{path} is a SQLite database, but not a chute queue file")
    if version > SCHEMA_VERSION:
        raise ChuteError(
            f"{path} was written by a newer chute (schema {version}); "
            f"this one reads schema {SCHEMA_VERSION} and older: upgrade chute"
        )
    return int(version)


def _stored_names(path: str) -> list[str]:
    """The queues in the file at ``path``, sorted, read on a read-only
    connection of its own: looking creates nothing."""
    if not os.path.isfile(path):
        raise QueueNotFound(f"no file {path}")
    try:
        conn = sqlite3.connect(_uri(path, "ro"), uri=True, timeout=60.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise ChuteError(f"cannot open {path}: {exc}") from exc
    try:
        if not _check_file(conn, path):
            return []
        rows = conn.execute("SELECT name FROM chute_queue ORDER BY name").fetchall()
        return [name for (name,) in rows]
    except sqlite3.Error as exc:
        raise _translate(exc, path) from exc
    finally:
        conn.close()


def _set_wal(conn: sqlite3.Connection, patience: float = 60.0) -> None:
    """``PRAGMA journal_mode=WAL``, waiting while another process holds the
    file (it may be creating it): SQLite's busy timeout does not cover a
    change of journal mode, which fails at once with "database is locked"."""
    deadline = time.monotonic() + patience
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _prepare(conn: sqlite3.Connection, path: str, durability: str) -> None:
    version = _check_file(conn, path)
    try:
        _set_wal(conn)
        conn.execute(f"PRAGMA synchronous={DURABILITY[durability]}")
        # Checkpoints are the thread's (see CHECKPOINT_BYTES), never a commit's.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Looked at again under the write lock: another process may
                # have brought the file up to date meanwhile.
                found = conn.execute("PRAGMA user_version").fetchone()[0]
                if found < SCHEMA_VERSION:
                    scripts = (
                        [_SCHEMA]
                        if found == 0
                        else [_MIGRATIONS[v] for v in range(found, SCHEMA_VERSION)]
                    )
                    now = repr(time.time())
                    for script in scripts:
                        for statement in script.split(";"):
                            if statement.strip():
                                conn.execute(statement.replace("@NOW", now))
                    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
    except sqlite3.Error as exc:
        raise _translate(exc, path) from exc
