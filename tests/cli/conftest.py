"""The command's tests run it as a user does: in a subprocess."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from typing import Any

import pytest

_names = itertools.count()


def chute(
    *args: str, stdin: str | None = None, cwd: Any = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chute", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def url(request: Any, tmp_path: Any) -> str:
    """A stored queue's URL. The servers are shared by the whole run (every
    queue of PostgreSQL's in one database and schema ``chute``): a test
    that uses them names its queues with ``name``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.db"
    if request.param == "redis":
        from tests.redis_server import shared_server as redis_server

        return redis_server().url
    from tests.postgres_server import shared_server as postgres_server

    return postgres_server().url


@pytest.fixture
def name() -> str:
    """A queue name never used before on the shared servers."""
    return f"cli-{os.getpid()}-{next(_names)}"
