"""PNG charts for the experiment reports (matplotlib, Agg: no display needed).

Every figure carries a footer with the machine, the versions and the date of the
run it shows: the numbers are only comparable within one run on one machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless CI and servers have no display

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from experiments.reporting import report

# The modes' colours; an implementation's is declared (``ImplementationSpec.color``).
COLORS = {
    "bare": "#9e9e9e",
    "inline": "#d62728",
    "reliable": "#2ca02c",
    "stock": "#98df8a",
}
PALETTE = ["#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f"]


def figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = (10, 4.8)) -> Any:
    """``(fig, axes)``; axes is always a flat list."""
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save(fig: Figure, path: Path, data: Mapping[str, Any], *, extra: str = "") -> Path:
    """Write the figure, with a footer naming the run it draws: ``data``'s machine
    record (a chart re-drawn from a JSON keeps its run's) and target, after ``extra``."""
    info = data.get("machine") or report.machine()
    v = info["versions"]
    text = (
        f"one run, {info['when']}, {info['cpus']} CPUs, Python {info['python']}"
        + "".join(f", {lib} {v[lib]}" for lib in report.libraries() if v.get(lib))
        + "; "
        + ", ".join(filter(None, (extra, f"target {data['target']}")))
    )
    fig.text(0.01, 0.005, text, fontsize=7, color="#555555", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    colors: Mapping[str, str] | None = None,
    log: bool = False,
    fmt: str = "{:.3g}",
    annotate: bool = True,
    group_colors: Sequence[str] | None = None,
) -> None:
    """One cluster per group, one bar per series within it, values written on top.

    ``group_colors``: one colour per group instead of per series (a single series
    whose groups are the sides being compared)."""
    n = max(len(series), 1)
    width = 0.8 / n
    for j, (name, values) in enumerate(series.items()):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(groups))]
        color: str | Sequence[str] = (colors or {}).get(name, PALETTE[j % len(PALETTE)])
        if group_colors is not None:
            color = group_colors
        bars = ax.bar(xs, values, width * 0.95, label=name, color=color)
        if annotate:
            for bar, value in zip(bars, values, strict=True):
                if value == value:  # not NaN
                    ax.annotate(
                        fmt.format(value),
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())  # 10, not 1×10^1
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)


def target_line(ax: Axes, y: float, label: str) -> None:
    ax.axhline(y, color="#d62728", linestyle="--", linewidth=1)
    ax.annotate(
        label,
        (0.99, y),
        xycoords=("axes fraction", "data"),
        ha="right",
        va="bottom",
        fontsize=7,
        color="#d62728",
    )
