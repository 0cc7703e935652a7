"""A PNG chart of the suites' ratios: one bar per (scenario, compared column),
its length the ratio printed in the tables (above 1: chute is faster; for
the Workers table, the time relative to a pool by hand). Needs matplotlib
(in the ``bench`` extra)."""

from __future__ import annotations

from typing import Any

from .harness import Suite, _compared_with


def ratios(suites: list[Suite]) -> list[tuple[str, float]]:
    """(label, ratio) for every cell that has one, in table order."""
    out = []
    for suite in suites:
        for row in suite.results:
            if row.error or not row.rates:
                continue
            other = _compared_with(suite, row)
            if other is None or other is row or other.error or not other.rates:
                continue
            out.append((f"{row.scenario.name}: {row.peer.name}", other.median / row.median))
    return out


def write_png(suites: list[Suite], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
