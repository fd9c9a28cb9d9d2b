"""The heavy report (``python -m experiments heavy``): its markdown and its chart.

``runs`` is keyed by configuration (``bg-def``, ``celery-2``, ...); each run names
its implementation (``side``), its route, its processes and its label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.perf import base
from experiments.reporting.tables import markdown_table
from shared.services import IMPLEMENTATIONS, Delivery, Implementation, delivery_of


def title_of(impl: str) -> str:
    """A measured implementation's title (one no longer declared: its value)."""
    return IMPLEMENTATIONS[Implementation(impl)].title if impl in IMPLEMENTATIONS else impl


def _or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def processes_text(sides: list[str]) -> str:
    """What the runs' processes are, for each implementation measured."""
    servers: dict[str, list[str]] = {}
    workers: list[str] = []
    for impl in dict.fromkeys(sides):
        if impl not in IMPLEMENTATIONS:
            continue
        if delivery_of(impl) == Delivery.in_process:
            servers.setdefault(base.server_of(impl), []).append(title_of(impl))
        elif base.pool_of(impl):
            workers.append(f"{title_of(impl)} pool processes")
        else:
            workers.append(f"{title_of(impl)}'s tasks at once (its worker's concurrency)")
    words = [f"{server} workers ({', '.join(titles)})" for server, titles in servers.items()]
    return _or([*words, *workers]) if words or workers else "as each implementation runs them"


def render(data: dict[str, Any]) -> str:
    rows = [
        [
            r["label"],
            r["idle_ms"]["p50"],
            r["load_ms"]["p50"],
            r["p50_ratio"],
            r["idle_ms"]["p99"],
            r["load_ms"]["p99"],
            r["p99_ratio"],
            f"{r['done']}/{r['scheduled']}",
            r["jobs_per_s"],
        ]
        for name, r in data["runs"].items()
    ]
    table = markdown_table(
        [
            "side, form, processes",
            "probe p50 idle ms",
            "p50 under load ms",
            "p50 ×",
            "probe p99 idle ms",
            "p99 under load ms",
            "p99 ×",
            "heavy jobs done",
            "jobs/s",
        ],
        rows,
    )
    c = data["config"]
    sides = [r["side"] for r in data["runs"].values()]
    notes = (
        f"Heavy jobs of {c['rounds']:,} rounds (≈ {c['task_ms']:g} ms of pure Python here) sent at "
        f"{c['rate_per_s']:.1f} per second ({c['load_cores']:g} core's worth) for "
        f"{c['seconds']:g} s, while `GET /health` probes the same API every "
        f"{c['probe_every_ms']:g} ms (sent on schedule, answered or not, each on a new "
        "connection, so that with several processes each lands where the kernel puts it). "
        "*×*: under load "
        "over idle, the same probe on the same stack. *jobs/s*: jobs done from the first "
        f"scheduled to the last finished. Processes: {processes_text(sides)}. Every process, "
        f"Redis and this load client share {data['conditions']['cpus']} CPUs."
    )
    return f"{table}\n\n{notes}"


def _short(run: dict[str, Any]) -> str:
    """A run's label on two lines: the implementation and form, then its processes."""
    p = run["processes"]
    return str(run["label"]).replace(f", {p} ", f"\n×{p} ")


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    runs = data["runs"]
    names = list(runs)
    fig, (ax1, ax2) = charts.figure(1, 2, size=(7 + 1.1 * len(names), 4.8))
    short = [_short(runs[n]) for n in names]
    charts.grouped_bars(
        ax1,
        short,
        {
            "idle p99": [runs[n]["idle_ms"]["p99"] for n in names],
            "under load p50": [runs[n]["load_ms"]["p50"] for n in names],
            "under load p99": [runs[n]["load_ms"]["p99"] for n in names],
        },
        ylabel="GET /health, ms (log)",
        colors={"idle p99": "#bdbdbd", "under load p50": "#fdae6b", "under load p99": "#e6550d"},
        log=True,
        fmt="{:.0f}",
    )
    ax1.tick_params(axis="x", labelsize=7)
    ax1.set_title("the API's answer while it schedules heavy jobs")
    charts.grouped_bars(
        ax2,
        short,
        {"jobs/s": [runs[n]["jobs_per_s"] for n in names]},
        ylabel="heavy jobs done per second",
        fmt="{:.1f}",
        group_colors=[
            base.color(runs[n]["side"]) if runs[n]["side"] in IMPLEMENTATIONS else "#777777"
            for n in names
        ],
    )
    ax2.tick_params(axis="x", labelsize=7)
    ax2.set_title("throughput of the heavy jobs")
    charts.save(fig, path, data)
