"""The idempotency report (``python -m experiments idempotency``): its markdown and
its chart. ``runs`` and ``ratios`` are keyed by each measured implementation's value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.reporting.tables import markdown_table, targets_table
from shared.services import IMPLEMENTATIONS, Implementation


def title_of(side: str) -> str:
    """A measured implementation's title (a report's key that is no longer declared: itself)."""
    return IMPLEMENTATIONS[Implementation(side)].title if side in IMPLEMENTATIONS else side


def render(data: dict[str, Any]) -> str:
    rows = [
        [side, f"{int(lines):,}", r["log_bytes_before"] / 2**20, r["finished"], r["tasks_per_s"]]
        for side, by_size in data["runs"].items()
        for lines, r in by_size.items()
    ]
    table = markdown_table(
        ["side", "log lines before", "log MiB before", "tasks done", "tasks/s"], rows
    )
    table += "\n\n" + targets_table(data["targets"])
    cfg = data["config"]
    notes = (
        f"{cfg['tasks']} `POST /items/` per run ({cfg['http_concurrency']} clients, closed "
        "loop), first request to last task done; each run on a fresh stack whose log was "
        "filled beforehand. The check reads one marker file and the bytes at the offset it "
        "names; before, it scanned the whole log under the lock, once per task."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.perf.base import color
    from experiments.reporting import charts

    fig, (ax,) = charts.figure(1, 1, size=(7, 4))
    sizes = list(next(iter(data["runs"].values())))
    sides = list(data["runs"])
    charts.grouped_bars(
        ax,
        [f"{int(s):,} lines" for s in sizes],
        {title_of(side): [data["runs"][side][s]["tasks_per_s"] for s in sizes] for side in sides},
        ylabel="tasks per second",
        colors={title_of(side): color(side) for side in sides if side in IMPLEMENTATIONS},
        fmt="{:.0f}",
    )
    ax.set_title("the idempotency check against the size of the log")
    charts.save(fig, path, data)
