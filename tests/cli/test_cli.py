"""The ``chute`` command, run as a user runs it: a subprocess."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import chute
from tests.cli.conftest import chute as run

pytestmark = [pytest.mark.timeout(120), pytest.mark.sync_only]

_databases = itertools.count()


def stats(url: str, name: str) -> Any:
    with chute.open(url, name, create=False) as q:
        return q.statistics()


@pytest.fixture(params=["redis", "postgres"])
def server_url(request: Any) -> str:
    """The URL of a shared server (queue names from ``name``)."""
    if request.param == "redis":
        from tests.redis_server import shared_server as redis_server

        return redis_server().url
    from tests.postgres_server import shared_server as postgres_server

    return postgres_server().url


def new_postgres_database() -> str:
    """The URL of a database of its own on the shared PostgreSQL server:
    nothing of chute's in it yet, and no other test's queues."""
    from tests.postgres_server import shared_server

    server = shared_server()
    database = f"cli_{os.getpid()}_{next(_databases)}"
    server.create_database(database)
    return server.url.rsplit("/", 1)[0] + "/" + database


def postgres_schemas(url: str) -> list[str]:
    """The schemas in the database at ``url``, but PostgreSQL's own."""
    import asyncpg

    async def look() -> list[str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname <> 'public'"
                " AND nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
            )
        finally:
            await conn.close()
        return sorted(r[0] for r in rows)

    return asyncio.run(look())


def write_handlers(folder: Any) -> None:
    (folder / "handlers.py").write_text(
        textwrap.dedent(
            """
            import os, time

            def handle(item):
                if item == "bad":
                    raise ValueError("never works")
                with open(os.environ["DONE"], "a") as f:
                    f.write(f"{item}\\n")

            def slow(item):
                time.sleep(30)
            """
        )
    )


def test_two_workers_running_one_schedule_put_each_slot_once(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    write_handlers(tmp_path)
    (tmp_path / "timetable.py").write_text(
        "import chute\nSCHEDULES = [chute.every(0.2, lambda slot: slot)]\nNOT_A_LIST = 3\n"
    )
    done = tmp_path / "done.txt"
    env = {**os.environ, "DONE": str(done)}
    assert run("put", url, "q", "--maxsize", "0", stdin="").returncode == 0
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chute",
                "worker",
                url,
                "q",
                "handlers:handle",
                "--schedules",
                "timetable:SCHEDULES",
            ],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while not done.exists() or len(done.read_text().split()) < 6:
            assert time.monotonic() < deadline, "the schedule's slots were not handled"
            time.sleep(0.05)
    finally:
        for w in workers:
            w.send_signal(signal.SIGINT)
        for w in workers:
            _, err = w.communicate(timeout=60)
            assert w.returncode == 0, err
    slots = sorted(float(line) for line in done.read_text().split())
    assert len(slots) == len(set(slots)), "a slot was handled twice"
    assert all(abs(b - a - 0.2) < 1e-6 for a, b in itertools.pairwise(slots))
    r = run("worker", url, "q", "handlers:handle", "--schedules", "timetable:NOT_A_LIST",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 1
    assert "timetable:NOT_A_LIST must be a list of chute.every() or chute.cron()" in r.stderr


def test_import_chute_does_not_import_rich():
    code = "import chute, sys; assert 'rich' not in sys.modules, 'rich was imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_put_inspect_work_and_dead_letters(url, name, tmp_path, monkeypatch):
    write_handlers(tmp_path)
    monkeypatch.setenv("DONE", str(tmp_path / "done.txt"))
    r = run("put", url, name, '"a"', "2", '{"n": 3}')
    assert (r.returncode, r.stderr.strip()) == (0, f"put 3 items into {name!r}")
    r = run("put", url, name, stdin='"bad"\n\n4\n')
    assert r.returncode == 0, r.stderr
    r = run("configure", url, name, "--max-deliveries", "2")
    assert (r.returncode, r.stderr.strip()) == (0, f"configured {name!r}: max deliveries 2")
    r = run("inspect", url, name, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["depth"] == 5

    r = run("worker", url, name, "handlers:handle", "--until-empty", "--max", "2",
            "--retry-delay", "0.01", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "processed 4, failed 2 (retried 1), dead letters 1 new" in r.stderr
    # The handler's failure is shown, traceback and all.
    assert "Traceback" in r.stderr
    assert "ValueError: never works" in r.stderr
    assert sorted((tmp_path / "done.txt").read_text().splitlines()) == ["2", "4", "a", "{'n': 3}"]

    r = run("dead", url, name)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == '"bad"'
    assert lines[1].startswith("    failed: 2 deliveries, died ")
    assert lines[2] == "    ValueError: never works"
    assert "Traceback" not in r.stdout
    r = run("dead", url, name, "--traceback")
    assert "    | Traceback (most recent call last):" in r.stdout
    assert "    | ValueError: never works" in r.stdout
    r = run("dead", url, name, "--json")
    (record,) = map(json.loads, r.stdout.splitlines())
    assert record["item"] == "bad"
    assert (record["deliveries"], record["reason"]) == (2, "failed")
    assert (record["error_type"], record["error"]) == ("ValueError", "never works")
    assert "Traceback" in record["traceback"]
    assert abs(record["died_at"] - time.time()) < 120

    r = run("dead", url, name, "--requeue")
    assert (r.returncode, r.stderr.strip()) == (0, "requeued 1 dead letter")
    r = run("inspect", url, name)
    assert "depth         1" in r.stdout
    r = run("dead", url, name, "--purge")
    assert (r.returncode, r.stderr.strip()) == (0, "purged 0 dead letters")


def test_looking_at_what_is_not_there_creates_nothing(tmp_path):
    missing = tmp_path / "missing.db"
    for args in (
        ["inspect", f"sqlite:///{missing}", "q"],
        ["dead", f"sqlite:///{missing}", "q"],
        ["ls", f"sqlite:///{missing}"],
        ["configure", f"sqlite:///{missing}", "q", "--maxsize", "3"],
        ["worker", f"sqlite:///{missing}", "q", "json:loads"],
    ):
        r = run(*args)
        assert (r.returncode, r.stderr.strip()) == (1, f"chute {args[0]}: no file {missing}")
    assert os.listdir(tmp_path) == []

    url = f"sqlite:///{tmp_path}/q.db"
    for queue in ("emails", "thumbnails"):
        assert run("put", url, queue, "1").returncode == 0
    for command in ("inspect", "dead"):
        r = run(command, url, "emials")
        assert r.returncode == 1
        assert r.stderr.strip() == (
            f"chute {command}: no queue 'emials' in {tmp_path}/q.db; "
            "queues here: emails, thumbnails"
        )
    r = run("ls", url, "--json")
    assert [json.loads(line)["queue"] for line in r.stdout.splitlines()] == ["emails", "thumbnails"]


def test_looking_at_a_queue_not_on_the_server_creates_nothing(server_url, name):
    url = server_url
    r = run("inspect", url, name)
    assert r.returncode == 1
    # Redis: "on 127.0.0.1:PORT/0"; PostgreSQL: "in 127.0.0.1:PORT/postgres".
    assert f"no queue {name!r} {'in' if url.startswith('postgresql') else 'on'} " in r.stderr
    r = run("ls", url, "--json")
    assert r.returncode == 0, r.stderr
    assert name not in r.stdout


def test_ls_skips_a_queue_deleted_under_it_and_lists_the_others(name):
    import redis

    from tests.redis_server import shared_server

    url = shared_server().url
    with chute.open(url, name) as q:
        q.sync.put(1)
    with chute.open(url, name + "-kept") as q:
        q.sync.put(2)
    # Half deleted, as a user's DEL of the stream leaves it: still listed.
    client = redis.Redis.from_url(url)
    try:
        client.delete(f"chute:{{{name}}}:items")
    finally:
        client.close()
    r = run("ls", url, "--json")
    assert r.returncode == 0, r.stderr
    assert f"skipped {name!r}" in r.stderr
    listed = [json.loads(line)["queue"] for line in r.stdout.splitlines()]
    assert name + "-kept" in listed
    assert name not in listed


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_ls_shows_each_queue_and_its_numbers(tmp_path, store):
    # A file, or a database, of their own: no other test's queues in the list.
    url = f"sqlite:///{tmp_path}/q.db" if store == "sqlite" else new_postgres_database()
    assert run("put", url, "emails", "1", "2", "3").returncode == 0
    assert run("put", url, "thumbnails", "--maxsize", "10", "1").returncode == 0
    r = run("ls", url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "queue       depth  in flight  delayed  dead letters  maxsize",
        "emails          3          0        0             0        0",
        "thumbnails      1          0        0             0       10",
    ]
    r = run("ls", url, "--json")
    assert json.loads(r.stdout.splitlines()[1]) == {
        "queue": "thumbnails",
        "depth": 1,
        "in_flight": 0,
        "delayed": 0,
        "dead_letters": 0,
        "maxsize": 10,
    }


def test_looking_at_a_postgres_database_without_chute_creates_nothing(tmp_path):
    url = new_postgres_database()
    where = "127.0.0.1:" + url.split(":")[-1]  # host:port/database
    for args in (
        ["inspect", url, "q"],
        ["dead", url, "q"],
        ["configure", url, "q", "--maxsize", "3"],
        ["worker", url, "q", "json:loads"],
    ):
        r = run(*args, cwd=tmp_path)
        assert (r.returncode, r.stderr.strip()) == (
            1,
            f"chute {args[0]}: no queue 'q' in {where}; no queues there",
        )
    r = run("ls", url)
    assert (r.returncode, r.stdout, r.stderr.strip()) == (0, "", f"no queues at {url}")
    assert postgres_schemas(url) == []  # not even chute's schema

    for queue in ("emails", "thumbnails"):
        assert run("put", url, queue, "1").returncode == 0
    assert postgres_schemas(url) == ["chute"]
    for command in ("inspect", "dead"):
        r = run(command, url, "emials")
        assert r.returncode == 1
        assert r.stderr.strip() == (
            f"chute {command}: no queue 'emials' in {where}; queues there: emails, thumbnails"
        )
    r = run("ls", url, "--json")
    assert [json.loads(line)["queue"] for line in r.stdout.splitlines()] == ["emails", "thumbnails"]


def test_the_command_never_shows_a_postgres_urls_password(tmp_path):
    # The test server trusts its clients: the password is sent, and ignored.
    url = new_postgres_database().replace("//postgres@", "//postgres:s3cret@")
    for args in (
        ["ls", url],
        ["inspect", url, "q"],
        ["put", url, "q", "1"],
        ["ls", url],
        ["inspect", url, "nope"],
        ["dead", url, "q"],
    ):
        r = run(*args, cwd=tmp_path)
        assert "s3cret" not in r.stdout + r.stderr, (args, r.stdout + r.stderr)


def test_the_command_keeps_a_queues_bounds(url, name, tmp_path, monkeypatch):
    """A queue bounded at 5 keeps its bound through inspect, dead, ls, put
    and worker; only configure changes it."""
    write_handlers(tmp_path)
    monkeypatch.setenv("DONE", str(tmp_path / "done.txt"))
    with chute.open(url, name, 5, max_deliveries=4) as q:
        q.sync.put("x")
    for args in (["inspect", url, name], ["dead", url, name], ["put", url, name, "1", "2"],
                 ["worker", url, name, "handlers:handle", "--until-empty"]):  # fmt: skip
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
        assert stats(url, name).maxsize == 5, args
    assert run("ls", url).returncode == 0
    with chute.open(url, name, create=False) as q:
        for i in range(5):
            q.sync.put_nowait(i)
        with pytest.raises(chute.QueueFull):
            q.sync.put_nowait(5)

    r = run("configure", url, name, "--maxsize", "7", "--max-deliveries", "none")
    assert (r.returncode, r.stderr.strip()) == (
        0,
        f"configured {name!r}: maxsize 7 (was 5), max deliveries no limit",
    )
    assert stats(url, name).maxsize == 7
    r = run("configure", url, name, "--maxsize", "0")
    assert r.stderr.strip() == f"configured {name!r}: maxsize unbounded (was 7)"


def test_put_creates_a_queue_with_the_bounds_given(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    r = run("put", url, "q", "--maxsize", "3", "--max-deliveries", "1", "1", "2")
    assert r.returncode == 0, r.stderr
    assert stats(url, "q").maxsize == 3
    r = run("put", url, "q", "1", "2", "3", "4")  # a batch that can never fit
    assert r.returncode == 1
    assert "a batch of 4 items can never fit a queue of maxsize 3" in r.stderr
    # Streamed, the batches fit the bound: a put waits for room.
    r = run("put", url, "q", stdin="3\n")
    assert r.returncode == 0, r.stderr
    assert stats(url, "q").size == 3


def test_put_with_a_delay_a_priority_and_a_key(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    assert run("put", url, "q", '"routine"').returncode == 0
    r = run("put", url, "q", '"later"', "--delay", "60")
    assert r.returncode == 0, r.stderr
    r = run("put", url, "q", "--priority", "-1", stdin='"urgent"\n')
    assert r.returncode == 0, r.stderr
    r = run("put", url, "q", '"invoice"', "--key", "invoice-42")
    assert (r.returncode, r.stderr.strip()) == (0, "put 1 item into 'q'")
    r = run("put", url, "q", '"invoice"', "--key", "invoice-42")
    assert r.returncode == 0, r.stderr
    assert "an item with key 'invoice-42' is in 'q' already: nothing stored" in r.stderr
    r = run("inspect", url, "q", "--json")
    numbers = json.loads(r.stdout)
    assert (numbers["depth"], numbers["scheduled"], numbers["total_put"]) == (4, 1, 4)
    r = run("put", url, "q", "1", "--delay", "-1")
    assert r.returncode == 1
    assert "delay must be a finite number of seconds >= 0" in r.stderr
    r = run("put", url, "q", "1", "2", "--key", "k")
    assert r.returncode == 1
    assert r.stderr.strip() == "chute put: --key puts one item, given as an argument"

    async def order() -> list[str]:
        async with chute.open(url, "q") as q:
            return await q.get_batch(10, timeout=10)

    assert asyncio.run(order()) == ["urgent", "routine", "invoice"]


def test_put_streams_stdin_and_says_what_it_stored_on_ctrl_c(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    assert run("put", url, "q", "0").returncode == 0
    with subprocess.Popen(
        [sys.executable, "-m", "chute", "put", url, "q"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as put:
        assert put.stdin is not None
        assert put.stderr is not None
        put.stdin.write("".join(f"{i}\n" for i in range(1, 1201)))
        put.stdin.flush()
        # Visible to consumers while the input is still open.
        deadline = time.monotonic() + 30
        while stats(url, "q").size < 1201:
            assert time.monotonic() < deadline, "the items never arrived"
            time.sleep(0.05)
        put.send_signal(signal.SIGINT)
        assert put.wait(30) == 130
        assert put.stderr.read().strip() == (
            "chute put: interrupted: stored 1200 items in 'q'; the rest of the input was not read"
        )
    with chute.open(url, "q", create=False) as q:
        assert q.sync.get_batch(2000) == list(range(1201))


def test_put_names_the_line_it_cannot_store(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    lines = "\n".join(["1"] * 600 + ["", "{bad", "2"]) + "\n"
    r = run("put", url, "q", stdin=lines)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("chute put: line 602 is not JSON: ")
    assert r.stderr.strip().endswith("; stored 600 items before it")
    assert stats(url, "q").size == 600
    r = run("put", url, "r", stdin="1\n" * 10 + "NaN\n")  # JSON parses it; the codec refuses
    assert r.returncode == 1
    assert r.stderr.startswith("chute put: line 11: the json codec cannot encode float")
    assert "Traceback" not in r.stderr
    assert stats(url, "r").size == 10


def test_a_worker_on_a_queue_of_another_codec_stops_at_the_first_item(url, name, tmp_path):
    (tmp_path / "handlers.py").write_text("def handle(item):\n    pass\n")
    r = run("put", url, name, "--codec", "pickle", *map(str, range(20)))
    assert r.returncode == 0, r.stderr
    r = run("worker", url, name, "handlers:handle", "--max", "1", cwd=tmp_path)
    assert r.returncode == 1
    assert "could not be decoded with the json codec" in r.stderr
    assert "is it written with --codec pickle?" in r.stderr
    s = stats(url, name)
    assert (s.dead_lettered, s.size) == (1, 19)  # one item, not the queue
    r = run("dead", url, name, "--requeue")
    assert r.returncode == 0, r.stderr
    r = run("worker", url, name, "handlers:handle", "--codec", "pickle", "--until-empty",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "processed 20," in r.stderr
    r = run("dead", url, name, "--codec", "pickle", "--json")
    assert r.stdout == ""


def test_the_demo_runs_and_loses_nothing(tmp_path):
    # No flaky failures (--fail 0): by default one job in about 140 runs
    # fails all three of its tries by chance. The one that always fails is
    # still tried three times, and is the one dead letter.
    r = run("demo", "--jobs", "60", "--fail", "0", "--file", str(tmp_path / "demo.db"))
    assert r.returncode == 0, r.stderr
    assert "handled 59 jobs" in r.stderr
    assert "(3 failed tries, 2 retried); dead letters 1; left in the queue 0" in r.stderr
    assert "Traceback" not in r.stderr  # its failures are on purpose: one line each
    assert r.stderr.rstrip().endswith("lost 0")


def test_the_demo_stopped_with_ctrl_c_resumes_where_it_stopped(tmp_path):
    db = str(tmp_path / "demo.db")
    with subprocess.Popen(
        [sys.executable, "-m", "chute", "demo", "--jobs", "3000", "--max", "4", "--file", db],
        stderr=subprocess.PIPE,
        text=True,
    ) as first:
        assert first.stderr is not None
        for line in first.stderr:  # its progress lines, every two seconds
            if line.startswith("depth"):
                first.send_signal(signal.SIGINT)  # Ctrl-C while it works
                break
        rest = first.stderr.read()
        assert first.wait(60) == 0, rest
    assert "stopping: waiting for " in rest
    assert "Ctrl-C again to give them back now" in rest
    left = int(rest.split("left in the queue ")[1].split()[0])
    assert left > 0
    assert rest.count("handled ") == 1
    assert "lost 0 — run `chute demo` again" in rest
    r = run("demo", "--file", db)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {left} jobs left from the last run" in r.stderr
    assert r.stderr.rstrip().endswith("lost 0")
    r = run("inspect", f"sqlite:///{db}", "demo", "--json")
    s = json.loads(r.stdout)
    assert (s["total_put"], s["depth"], s["in_flight"], s["unfinished"]) == (3000, 0, 0, 0)


def test_a_handler_module_that_fails_to_load_is_one_line(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written module')\n")
    r = run("worker", "sqlite:///q.db", "q", "broken:f", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "chute worker: cannot import 'broken': RuntimeError: half-written module"
    )
    r = run("worker", "sqlite:///q.db", "q", "broken2:f", cwd=tmp_path)
    assert r.returncode == 1
    assert "cannot import 'broken2': ModuleNotFoundError" in r.stderr
    r = run("worker", "sqlite:///q.db", "q", "json:nothing", cwd=tmp_path)
    assert r.stderr.strip() == "chute worker: 'json' has no function 'nothing'"
    assert os.listdir(tmp_path) == ["broken.py"]


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_a_server_that_is_not_there_is_one_line(scheme):
    from tests.redis_server import free_port

    where = {"redis": "0", "postgresql": "postgres"}[scheme]
    r = run("inspect", f"{scheme}://127.0.0.1:{free_port()}/{where}", "q")
    assert r.returncode == 1
    assert r.stderr.startswith("chute inspect: ")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


def test_bench_outside_a_checkout_says_where_the_benchmarks_are(tmp_path):
    r = run("bench", cwd=tmp_path)
    assert r.returncode == 1
    assert "run this from a checkout" in r.stderr
