"""What the benchmark charts are drawn from: the scaling table's rates by
transport (chute against itself), kept out of the chart of ratios to peers."""

from __future__ import annotations

from types import SimpleNamespace

from benchmarks import chart
from benchmarks.harness import Result, Suite


def _suite(rows: list[tuple[str, str, list[float]]], versus: dict[str, str | None]) -> Suite:
    peers = {name: SimpleNamespace(name=name, versus=versus.get(name)) for _, name, _ in rows}
    scenarios = {scenario: SimpleNamespace(name=scenario) for scenario, _, _ in rows}
    results = [
        Result(scenarios[scenario], peers[name], rates)  # type: ignore[arg-type]
        for scenario, name, rates in rows
    ]
    subject = SimpleNamespace(peer=peers[rows[0][1]], module=None, version="x")
    return Suite(subject, [], [], results, 100, 3, 0.5, "asyncio")  # type: ignore[arg-type]


def test_scaling_rates_are_read_by_table_and_transport_in_column_order():
    suite = _suite(
        [
            ("scaling, sqlite, consumers", "1 consumer", [1.0, 3.0, 2.0]),
            ("scaling, sqlite, consumers", "4 consumers", [8.0]),
            ("scaling, redis, consumers", "1 consumer", [5.0]),
            ("scaling, sqlite, stored", "10^3 stored", [7.0]),
            ("scaling, sqlite, stored", "10^6 stored", []),  # failed: no rates
        ],
        {"4 consumers": "1 consumer"},
    )
    assert chart.scaling_rates([suite]) == {
        "consumers": {
            "sqlite": [("1 consumer", 2.0), ("4 consumers", 8.0)],
            "redis": [("1 consumer", 5.0)],
        },
        "stored": {"sqlite": [("10^3 stored", 7.0)]},
    }
    # Columns of one transport against each other are not chute against a peer.
    assert chart.ratios([suite]) == []


def test_the_chart_of_ratios_keeps_the_peers():
    suite = _suite(
        [("one loop, 1→1", "chute", [4.0]), ("one loop, 1→1", "asyncio.Queue", [2.0])],
        {"asyncio.Queue": "chute"},
    )
    assert chart.ratios([suite]) == [("one loop, 1→1: asyncio.Queue", 2.0)]
