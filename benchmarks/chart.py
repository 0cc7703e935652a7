"""PNG charts of the suites. ``write_png``: the ratios, one bar per
(scenario, compared column), its length the ratio printed in the tables
(above 1: chute is faster; for the Workers table, the time relative to a
pool by hand). ``write_scaling_png``: how chute's rate grows with consumers
and with items stored, a line per transport (the scaling table is chute
against itself: no ratios to a peer). Need matplotlib (in the ``bench``
extra)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .harness import Result, Suite, _compared_with


def ratios(suites: list[Suite]) -> list[tuple[str, float]]:
    """(label, ratio) for every cell that has one, in table order."""
    out = []
    for suite, row in _measured(suites, scaling=False):
        other = _compared_with(suite, row)
        if other is None or other is row or other.error or not other.rates:
            continue
        out.append((f"{row.scenario.name}: {row.peer.name}", other.median / row.median))
    return out


def _pyplot() -> Any:
    """matplotlib's pyplot, drawing into files (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_png(suites: list[Suite], path: str) -> None:
    plt = _pyplot()
    bars = ratios(suites)
    if not bars:
        raise ValueError("no ratios to chart")
    fig: Any
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(bars) + 1.2))
    labels = [label for label, _ in bars]
    values = [value for _, value in bars]
    colors = ["#2a7" if v >= 1 else "#c53" for v in values]
    ax.barh(range(len(bars)), values, color=colors)
    ax.set_yticks(range(len(bars)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel(
        "chute's rate / the column's (log scale; above 1: chute is faster); "
        "Workers: its time relative to a pool by hand"
    )
    ax.set_title("chute against the libraries it replaces (median of the runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _measured(suites: list[Suite], *, scaling: bool) -> Iterator[tuple[Suite, Result]]:
    """The rows that have rates: of the scaling table, or of every other."""
    for suite in suites:
        for row in suite.results:
            if row.rates and not row.error and row.scenario.name.startswith("scaling, ") == scaling:
                yield suite, row


def scaling_rates(suites: list[Suite]) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """{table: {transport: [(column, items/s)]}} of the scaling suite, in
    column order; runs that failed are left out."""
    out: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for _, row in _measured(suites, scaling=True):
        _, transport, table = (part.strip() for part in row.scenario.name.split(","))
        out.setdefault(table, {}).setdefault(transport, []).append((row.peer.name, row.median))
    return out


def write_scaling_png(suites: list[Suite], path: str) -> None:
    plt = _pyplot()
    tables = scaling_rates(suites)
    if not tables:
        raise ValueError("no scaling figures to chart")
    titles = {
        "consumers": "more consumers (tasks on one loop)",
        "stored": "more items stored besides those taken",
    }
    fig: Any
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 4), squeeze=False)
    for ax, (table, lines) in zip(axes[0], tables.items(), strict=True):
        for transport, points in lines.items():
            ax.plot(
                [label.split()[0] for label, _ in points],
                [rate for _, rate in points],
                marker="o",
                label=transport,
            )
        ax.set_yscale("log")
        ax.set_ylabel("items/s (log scale), median of the runs")
        ax.set_xlabel(table)
        ax.set_title(titles.get(table, table))
        ax.grid(True, which="both", axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("chute: items taken and acknowledged one at a time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
