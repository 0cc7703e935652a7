"""Fixtures of the PostgreSQL transport's own tests: a real server started
on loopback by the tests (``tests/postgres_server.py``), shared by the run,
and a queue name no other test uses."""

from __future__ import annotations

import itertools
import os

import pytest

from tests.postgres_server import PostgresServer, shared_server

_names = itertools.count()


@pytest.fixture
def server() -> PostgresServer:
    """The run's shared server: tests that stop or kill a server start their own."""
    return shared_server()


@pytest.fixture
def url(server: PostgresServer) -> str:
    return server.url


@pytest.fixture
def name() -> str:
    return f"pg-{os.getpid()}-{next(_names)}"
