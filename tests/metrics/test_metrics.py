"""chute.metrics: what a Prometheus scrape sees of queues and pools, read
from the stores, over a real HTTP endpoint and from ``chute worker``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import chute
import chute.metrics
from chute.metrics import ChuteCollector

pytestmark = pytest.mark.timeout(60)

WORKER = [sys.executable, "-m", "chute", "worker"]


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, queue: str, **labels: str) -> float:
    return samples[(name, tuple(sorted({"queue": queue, **labels}.items())))]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_queue_metrics_are_the_queues_numbers(kind, tmp_path):
    if kind == "memory":
        queue: Any = chute.Queue(max_deliveries=1)
    else:
        queue = await chute.open(f"sqlite:///{tmp_path}/q.db", "jobs", max_deliveries=1)
    registry = CollectorRegistry()
    collector = ChuteCollector()
    collector.watch(queue, name="jobs")
    registry.register(collector)
    await queue.put_batch(["a", "b", "c", "d"])
    await queue.put("later", delay=60)
    held = await queue.reserve(timeout=10)  # "a": in flight
    doomed = await queue.reserve(timeout=10)
    await doomed.anack()  # "b": its one delivery failed: a dead letter
    await queue.get(timeout=10)  # "c"
    s = await asyncio.to_thread(scrape, registry)
    assert value(s, "chute_queue_up", "jobs") == 1
    assert value(s, "chute_queue_ready_items", "jobs") == 1  # "d"
    assert value(s, "chute_queue_delayed_items", "jobs") == 1
    assert value(s, "chute_queue_in_flight_items", "jobs") == 1
    assert value(s, "chute_queue_dead_letters", "jobs") == 1
    assert value(s, "chute_queue_maxsize", "jobs") == 0
    assert value(s, "chute_queue_put_total", "jobs") == 5
    assert value(s, "chute_queue_got_total", "jobs") == 3
    stored = not isinstance(queue, chute.Queue)
    assert (("chute_queue_oldest_ready_age_seconds", (("queue", "jobs"),)) in s) == stored
    if stored:
        assert value(s, "chute_queue_oldest_ready_age_seconds", "jobs") >= 0
    await held.aack()
    if stored:
        await queue.aclose()


async def test_a_queue_that_cannot_be_read_is_down_and_the_scrape_goes_on(tmp_path):
    lost = await chute.open(f"sqlite:///{tmp_path}/lost.db", "lost")
    kept = chute.Queue()
    registry = CollectorRegistry()
    collector = ChuteCollector(lost)
    registry.register(collector)  # describing never asks a store
    collector.watch(kept, name="kept")
    await lost.aclose()
    s = await asyncio.to_thread(scrape, registry)
    assert value(s, "chute_queue_up", "lost") == 0
    assert ("chute_queue_ready_items", (("queue", "lost"),)) not in s
    assert value(s, "chute_queue_up", "kept") == 1


def test_an_unnamed_queue_must_be_given_a_name():
    with pytest.raises(ValueError, match="name="):
        ChuteCollector(chute.Queue())
    ChuteCollector().watch(chute.Queue(), name="ok")


async def test_pool_metrics_count_what_the_pool_did():
    q: chute.Queue[str] = chute.Queue(max_deliveries=2)
    collector = ChuteCollector()
    registry = CollectorRegistry()
    registry.register(collector)

    async def handle(item: str) -> None:
        if item == "bad":
            raise ValueError(item)

    workers = chute.Workers(q, handle, retry_delay=0, max_workers=2)
    collector.watch(workers, name="jobs")
    await q.put_batch(["ok 1", "bad", "ok 2"])
    async with workers:
        await asyncio.wait_for(q.join(), 30)
    s = await asyncio.to_thread(scrape, registry)
    assert value(s, "chute_workers_processed_total", "jobs") == 2
    assert value(s, "chute_workers_failed_total", "jobs") == 2  # "bad", twice
    assert value(s, "chute_workers_retried_total", "jobs") == 1
    assert value(s, "chute_workers_dead_total", "jobs") == 1
    assert value(s, "chute_workers_running", "jobs") == 0  # stopped
    assert value(s, "chute_workers_busy", "jobs") == 0
    assert value(s, "chute_workers_handling_seconds_count", "jobs") == 4
    assert value(s, "chute_workers_handling_seconds_bucket", "jobs", le="+Inf") == 4
    assert value(s, "chute_workers_handling_seconds_bucket", "jobs", le="60.0") == 4
    assert value(s, "chute_workers_handling_seconds_sum", "jobs") >= 0


async def test_serve_answers_on_a_port_of_its_own(tmp_path):
    async with chute.open(f"sqlite:///{tmp_path}/q.db", "mail") as q:
        await q.put("hello")
        _, server = chute.metrics.serve(0, q)
        try:
            port = server.server_address[1]
            url = f"http://127.0.0.1:{port}/metrics"

            def fetch() -> str:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    return str(answer.read().decode())

            text = await asyncio.to_thread(fetch)
        finally:
            server.shutdown()
            server.server_close()
    assert 'chute_queue_ready_items{queue="mail"} 1.0' in text
    assert "process_cpu_seconds_total" in text  # the process's own metrics too


def test_chute_worker_serves_metrics_while_it_runs(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    (tmp_path / "handlers.py").write_text(
        textwrap.dedent(
            """
            def handle(item):
                pass
            """
        )
    )
    put = subprocess.run(
        [sys.executable, "-m", "chute", "put", url, "q", "1", "2", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert put.returncode == 0, put.stderr
    worker = subprocess.Popen(
        [*WORKER, url, "q", "handlers:handle", "--metrics-port", "0"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert worker.stderr is not None
        line = ""
        deadline = time.monotonic() + 60
        while "metrics on " not in line:
            assert time.monotonic() < deadline
            line = worker.stderr.readline()
            assert line, "the worker ended without serving metrics"
        endpoint = line.split("metrics on ", 1)[1].strip()
        while True:  # the three items are handled by and by
            with urllib.request.urlopen(endpoint, timeout=10) as answer:
                text = answer.read().decode()
            if 'chute_workers_processed_total{queue="q"} 3.0' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert 'chute_queue_put_total{queue="q"} 3.0' in text
    finally:
        worker.send_signal(signal.SIGINT)
        worker.communicate(timeout=60)
    assert worker.returncode == 0


def test_a_taken_metrics_port_is_a_clear_failure(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "handlers.py").write_text("def handle(item):\n    pass\n")
        url = f"sqlite:///{tmp_path}/q.db"
        subprocess.run([sys.executable, "-m", "chute", "put", url, "q", "1"], check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        r = subprocess.run(
            [*WORKER, url, "q", "handlers:handle", "--metrics-port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert r.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in r.stderr
