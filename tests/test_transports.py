"""chute.open finds a transport by its URL's scheme, in one table that
imports lazily, and a package can add a scheme through the
``chute.transports`` entry-point group without touching chute."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import chute
from chute._open import BUILTIN_TRANSPORTS, queue_names, schemes

pytestmark = pytest.mark.timeout(60)

FAKE = '''
import chute

class MemoTransport:
    """A transport of a third-party package: queues in a dict, by name."""

    def __init__(self):
        self.queues = {}

    def parse_url(self, url):
        if not url.startswith("memo://"):
            raise ValueError(f"{url!r}: not a memo:// URL")
        return url[len("memo://"):] or "default-host"

    def open(self, where, name, maxsize, *, create, **options):
        key = (where, name)
        if key not in self.queues:
            if not create:
                raise chute.QueueNotFound(f"no queue {name!r} at memo://{where}")
            self.queues[key] = chute.Queue(maxsize or 0)
        return self.queues[key]

    def queue_names(self, where, **options):
        return sorted(n for w, n in self.queues if w == where)

transport = MemoTransport()
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution (a dist-info on sys.path) adding ``memo://``."""
    (tmp_path / "chute_memo.py").write_text(FAKE)
    info = tmp_path / "chute_memo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chute-memo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[chute.transports]\nmemo = chute_memo:transport\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("chute_memo", None)


def test_a_package_adds_a_scheme_through_an_entry_point(plugin):
    assert "memo" in schemes()
    with chute.open("memo://here", "jobs", 2) as q:
        q.sync.put("a")
    with chute.open("memo://here", "jobs", create=False) as again:
        assert again.sync.get() == "a"
    assert queue_names("memo://here") == ["jobs"]
    with pytest.raises(chute.QueueNotFound), chute.open("memo://here", "nope", create=False):
        pass
    with pytest.raises(ValueError, match="not a memo:// URL"):
        chute.open("MEMO:x", "jobs")


def test_an_unknown_scheme_names_the_ones_there_are(plugin):
    with pytest.raises(ValueError, match=r"unknown scheme 'ftp'.*memo://.*sqlite://"):
        chute.open("ftp://host/x", "q")


def test_a_built_in_scheme_is_not_taken_over(tmp_path, monkeypatch):
    info = tmp_path / "evil-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[chute.transports]\nsqlite = nowhere:nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "q.db"
    with chute.open(f"sqlite:///{path}", "jobs") as q:
        q.sync.put(1)
        assert q.qsize() == 1


def test_transports_are_imported_only_when_a_url_asks_for_them():
    code = textwrap.dedent(
        """
        import sys
        import chute
        chute.open("memory://", "q")
        # No transport is loaded, nor the Redis client. (Not sqlite3 itself:
        # coverage, measuring this subprocess, uses it.)
        loaded = [
            m for m in sys.modules
            if m.startswith(("chute._backends", "chute._transports", "redis", "asyncpg"))
        ]
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_every_built_in_scheme_is_listed():
    assert {"sqlite", "redis", "rediss", "postgresql", "postgres", "memory"} <= set(schemes())
    assert set(BUILTIN_TRANSPORTS) == {"sqlite", "redis", "rediss", "postgresql", "postgres"}
