"""The ``chute`` command, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytestmark = [pytest.mark.timeout(120), pytest.mark.sync_only]


def chute(
    *args: str, stdin: str | None = None, cwd: Any = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chute", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@pytest.fixture(params=["sqlite", "redis"])
def url(request: Any, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.db"
    from tests.redis_server import shared_server

    return shared_server().url


@pytest.fixture
def name(tmp_path: Any) -> str:
    return f"cli-{os.getpid()}-{abs(hash(str(tmp_path)))}"


def test_put_inspect_work_and_dead_letters(url, name, tmp_path):
    done = tmp_path / "done.txt"
    (tmp_path / "handlers.py").write_text(
        textwrap.dedent(
            f"""
            def handle(item):
                if item == "bad":
                    raise ValueError("never works")
                with open({str(done)!r}, "a") as f:
                    f.write(f"{{item}}\\n")
            """
        )
    )
    r = chute("put", url, name, '"a"', "2", '{"n": 3}')
    assert r.returncode == 0, r.stderr
    assert "put 3 items" in r.stderr
    r = chute("put", url, name, stdin='"bad"\n\n4\n')
    assert r.returncode == 0, r.stderr
    r = chute("inspect", url, name, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["depth"] == 5

    r = chute("worker", "handlers:handle", "--url", url, "--queue", name, "--until-empty",
              "--max", "2", "--max-deliveries", "2", "--retry-delay", "0.01",
              cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "processed 4" in r.stderr
    assert sorted(done.read_text().splitlines()) == ["2", "4", "a", "{'n': 3}"]

    r = chute("dead", url, name)
    assert (r.returncode, r.stdout.split()) == (0, ['"bad"'])
    r = chute("dead", url, name, "--requeue")
    assert (r.returncode, r.stderr.strip()) == (0, "requeued 1 dead letter")
    r = chute("inspect", url, name)
    assert "depth         1" in r.stdout
    r = chute("dead", url, name, "--purge")
    assert r.returncode == 0


def test_the_demo_runs_and_loses_nothing(tmp_path):
    r = chute("demo", "--jobs", "60", "--file", str(tmp_path / "demo.db"))
    assert r.returncode == 0, r.stderr
    assert "dead letters 1" in r.stderr
    assert r.stderr.rstrip().endswith("lost 0")


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["worker", "m:f"], 2, "required: --url"),
        (["demo", "--jobs", "0"], 2, "must be at least 1"),
        (["put", "sqlite:///q.db", "q", "{not json"], 1, "argument 1 is not JSON"),
        (["inspect", "ftp://x", "q"], 1, "unknown scheme"),
        (["inspect", "sqlite:///no/such/folder/q.db", "q"], 1, "does not exist"),
        (["worker", "nosuchmodule:f", "--url", "memory://", "--queue", "q"], 1, "cannot import"),
        (["worker", "json", "--url", "memory://", "--queue", "q"], 1, "module:function"),
        (["dead", "sqlite:///q.db", "q", "--requeue", "--purge"], 2, "not allowed with"),
        ([], 2, "required"),
        (["bench"], 1, "run this from a checkout"),  # the benchmarks are not installed
    ],
)
def test_bad_arguments_give_one_clear_line_and_a_non_zero_exit(tmp_path, args, status, message):
    r = chute(*args, cwd=tmp_path)
    assert r.returncode == status
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_the_demo_stopped_with_ctrl_c_resumes_where_it_stopped(tmp_path):
    db = str(tmp_path / "demo.db")
    with subprocess.Popen(
        [sys.executable, "-m", "chute", "demo", "--jobs", "3000", "--max", "4", "--file", db],
        stderr=subprocess.PIPE,
        text=True,
    ) as first:
        assert first.stderr is not None
        lines = []
        for line in first.stderr:  # its progress lines, every two seconds
            lines.append(line)
            if line.startswith("depth"):
                first.send_signal(signal.SIGINT)  # Ctrl-C while it works
                break
        rest = first.stderr.read()
        assert first.wait(60) == 0, rest
    left = int(rest.split("left in the queue ")[1].split()[0])
    assert left > 0
    assert "lost 0 — run `chute demo` again" in rest
    r = chute("demo", "--file", db)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {left} jobs left from the last run" in r.stderr
    assert r.stderr.rstrip().endswith("lost 0")
    r = chute("inspect", f"sqlite:///{db}", "demo", "--json")
    stats = json.loads(r.stdout)
    assert (stats["total_put"], stats["depth"], stats["in_flight"], stats["unfinished"]) == (
        3000,
        0,
        0,
        0,
    )


def test_put_stores_all_or_nothing_and_names_the_bad_line(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    lines = "\n".join(["1"] * 600 + ["", "{bad"]) + "\n"
    r = chute("put", url, "q", stdin=lines)
    assert r.returncode == 1
    assert "line 602 is not JSON" in r.stderr
    r = chute("put", url, "q", stdin="1\n" * 600 + "NaN\n")  # JSON parses it; the codec refuses
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    r = chute("inspect", url, "q", "--json")
    assert json.loads(r.stdout)["total_put"] == 0  # nothing was stored


def test_a_handler_module_that_fails_to_load_is_one_line(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written module')\n")
    r = chute("worker", "broken:f", "--url", "memory://", "--queue", "q", cwd=tmp_path)
    assert r.returncode == 1
    assert "cannot import 'broken': RuntimeError: half-written module" in r.stderr
    assert "Traceback" not in r.stderr
