"""Prometheus metrics for chute queues and worker pools (``pip install
'chute[metrics]'``, on ``prometheus_client``).

Read when scraped, not pushed as things happen: a queue's numbers come from
its store at each scrape (what every client did, surviving restarts), a
pool's from counters it keeps anyway. Nothing is added to a put or a get,
and a pool only counts its handling times in plain ints::

    import chute.metrics
    from prometheus_client import REGISTRY

    REGISTRY.register(chute.metrics.ChuteCollector(q, workers))  # your registry
    chute.metrics.serve(9100, q, workers)  # or a port of their own

Every metric carries the label ``queue`` (the queue's name). The names and
what they mean are listed in the README ("Metrics").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "chute.metrics needs prometheus_client: pip install 'chute[metrics]'"
    ) from exc

from ._workers.pool import Workers

__all__ = ["ChuteCollector", "serve"]

logger = logging.getLogger("chute.metrics")

_QUEUE = ("queue",)


class ChuteCollector(Collector):
    """The metrics of the queues and ``Workers`` pools given (or added with
    ``watch``), read at each scrape. Register it with any registry."""

    def __init__(self, *watched: Any) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, Any] = {}
        self._pools: dict[str, Workers[Any]] = {}
        for thing in watched:
            self.watch(thing)

    def watch(self, thing: Any, *, name: str | None = None) -> None:
        """Add a queue or a ``Workers`` pool, labelled ``name`` (default: the
        queue's own name; an in-process queue has none, so give one)."""
        pool = thing if isinstance(thing, Workers) else None
        queue = pool.queue if pool is not None else thing
        label = name if name is not None else getattr(queue, "name", None)
        if not isinstance(label, str) or not label:
            raise ValueError(
                f"{thing!r} has no name to label its metrics with: watch(..., name='...')"
            )
        if pool is not None:
            pool.time_handlers()
        with self._lock:
            if pool is not None:
                self._pools[label] = pool
            else:
                self._queues[label] = queue

    def describe(self) -> Iterable[Metric]:
        # What a registry checks names with when this is registered: the
        # families, without asking any store.
        return list(_families(with_age=True).values()) + list(_pool_families().values())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            queues = list(self._queues.items())
            pools = list(self._pools.items())
        if queues:
            yield from _queue_metrics(queues).values()
        if pools:
            yield from _pool_metrics(pools).values()


_QueueFamily = GaugeMetricFamily | CounterMetricFamily


def _families(*, with_age: bool) -> dict[str, _QueueFamily]:
    families: dict[str, _QueueFamily] = {
        "up": GaugeMetricFamily(
            "chute_queue_up",
            "1 if the queue's store answered this scrape, 0 if it could not be read.",
            labels=_QUEUE,
        ),
        "ready": GaugeMetricFamily(
            "chute_queue_ready_items", "Items a get would take now.", labels=_QUEUE
        ),
        "delayed": GaugeMetricFamily(
            "chute_queue_delayed_items",
            "Items waiting for their time: put with delay= or given back with nack(delay=).",
            labels=_QUEUE,
        ),
        "in_flight": GaugeMetricFamily(
            "chute_queue_in_flight_items",
            "Items reserved by a consumer and not yet settled.",
            labels=_QUEUE,
        ),
        "dead": GaugeMetricFamily(
            "chute_queue_dead_letters", "Items in the queue's dead letters.", labels=_QUEUE
        ),
        "maxsize": GaugeMetricFamily(
            "chute_queue_maxsize", "The queue's bound (0: unbounded).", labels=_QUEUE
        ),
        "put": CounterMetricFamily(
            "chute_queue_put", "Items put into the queue, by every client.", labels=_QUEUE
        ),
        "got": CounterMetricFamily(
            "chute_queue_got",
            "Items handed out by the queue (an item delivered twice counts twice).",
            labels=_QUEUE,
        ),
    }
    if with_age:
        families["age"] = GaugeMetricFamily(
            "chute_queue_oldest_ready_age_seconds",
            "Seconds the oldest item a get would take has waited (0: none waiting). "
            "Stored queues only.",
            labels=_QUEUE,
        )
    return families


def _queue_metrics(queues: list[tuple[str, Any]]) -> dict[str, _QueueFamily]:
    families = _families(with_age=True)
    for name, queue in queues:
        label = [name]
        try:
            s = queue.statistics()
        except Exception as exc:  # the store is away: say so, and go on
            logger.warning("could not read queue %r for its metrics: %s", name, exc)
            families["up"].add_metric(label, 0)
            continue
        families["up"].add_metric(label, 1)
        families["ready"].add_metric(label, s.size - s.scheduled)
        families["delayed"].add_metric(label, s.scheduled + s.delayed)
        families["in_flight"].add_metric(label, s.in_flight - s.delayed)
        families["dead"].add_metric(label, s.dead_lettered)
        families["maxsize"].add_metric(label, s.maxsize)
        families["put"].add_metric(label, s.total_put)
        families["got"].add_metric(label, s.total_got)
        age = getattr(s, "oldest_ready_age", None)
        if _tracks_age(queue):
            families["age"].add_metric(label, age if age is not None else 0.0)
    return families


def _tracks_age(queue: Any) -> bool:
    """Stored queues know when their items were put; in-process ones do
    not keep the time (it would cost every put)."""
    from ._durable.queue import DurableQueue

    return isinstance(queue, DurableQueue)


def _pool_families() -> dict[str, Any]:  # a gauge, a counter or a histogram each
    def counter(name: str, doc: str) -> CounterMetricFamily:
        return CounterMetricFamily(f"chute_workers_{name}", doc, labels=_QUEUE)

    return {
        "processed": counter("processed", "Items handled and acknowledged."),
        "failed": counter("failed", "Handler failures (and leases lost before the handler ended)."),
        "retried": counter("retried", "Failed items given back to be tried again."),
        "dead": counter("dead", "Failed items this pool moved to the dead letters."),
        "running": GaugeMetricFamily(
            "chute_workers_running", "Workers in the pool now.", labels=_QUEUE
        ),
        "busy": GaugeMetricFamily(
            "chute_workers_busy", "Workers handling an item now.", labels=_QUEUE
        ),
        "handling": HistogramMetricFamily(
            "chute_workers_handling_seconds",
            "Seconds each handler call took (failed ones too).",
            labels=_QUEUE,
        ),
    }


def _pool_metrics(pools: list[tuple[str, Workers[Any]]]) -> dict[str, Any]:
    families = _pool_families()
    for name, pool in pools:
        label = [name]
        # Read as they stand (the pool runs on its loop, this on the
        # scraper's thread): each an int read whole.
        families["processed"].add_metric(label, pool._processed)
        families["failed"].add_metric(label, pool._failed)
        families["retried"].add_metric(label, pool._retried)
        families["dead"].add_metric(label, pool._dead)
        families["running"].add_metric(label, pool.workers)
        families["busy"].add_metric(label, pool.busy_count())
        times = pool.handling_times()
        if times is not None:
            families["handling"].add_metric(
                label,
                [(_bound(le), n) for le, n in times.buckets],
                sum_value=times.total,
            )
    return families


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


def serve(port: int, *watched: Any, host: str = "127.0.0.1") -> tuple[ChuteCollector, Any]:
    """Serve the metrics of ``watched`` (queues, ``Workers``) and of this
    process on ``http://host:port/metrics``, from a thread of their own.

    Returns the collector (``watch()`` more on it) and the HTTP server
    (``server.shutdown()`` stops it). Bound to 127.0.0.1 unless told:
    ``host="0.0.0.0"`` for a scraper on another machine.
    """
    registry = CollectorRegistry()
    collector = ChuteCollector(*watched)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return collector, server
