"""The threadpool report (``python -m experiments threadpool``): its markdown and its chart.

A report holds one entry per implementation that runs its tasks in its API's own
process (``implementations``: title, scenarios, ratios). A report written before
the experiment iterated over the declaration holds one implementation's
``scenarios`` and ``ratios`` at its top level; it renders as that one entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.reporting.tables import markdown_table


def entries(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each measured implementation's entry, by its value ("" for a report that
    predates the entries and names none)."""
    if "implementations" in data:
        found: dict[str, dict[str, Any]] = data["implementations"]
        return found
    return {"": {"title": "", "scenarios": data["scenarios"], "ratios": data["ratios"]}}


def _table(entry: dict[str, Any]) -> str:
    rows = [
        [
            name,
            s["threadpool_tokens"],
            s["sync_endpoint_ms"]["p50"],
            s["sync_endpoint_ms"]["max"],
            s["async_endpoint_ms"]["p50"],
            s["async_endpoint_ms"]["max"],
            s["schedule_ms"]["max"],
            s["tasks_span_s"],
        ]
        for name, s in entry["scenarios"].items()
    ]
    return markdown_table(
        [
            "scenario",
            "tokens",
            "sync endpoint p50 ms",
            "sync max ms",
            "async endpoint p50 ms",
            "async max ms",
            "slowest task request ms",
            "all tasks done after s",
        ],
        rows,
    )


def render(data: dict[str, Any]) -> str:
    found = entries(data)
    several = len(found) > 1
    table = "\n\n".join(
        (f"**{e['title']}**\n\n" if several else "") + _table(e) for e in found.values()
    )
    cfg = data["config"]
    notes = (
        f"{cfg['tasks']} tasks of {cfg['seconds']:g} s fired at once; probes every "
        f"{cfg['probe_every_ms']:g} ms for 0.9 × {cfg['seconds']:g} s on the sync endpoint "
        f"(`{cfg['sync_endpoint']}`, a `def`) and the async one (`{cfg['async_endpoint']}`). "
        "The task requests themselves need no token: the mechanics endpoints and their "
        "dependencies are `async def`. Load average at "
        f"the start: {data['conditions']['loadavg_1m']}."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    found = entries(data)
    fig, axes = charts.figure(len(found), 2, size=(12, 4.8 * len(found)))
    for row, entry in enumerate(found.values()):
        ax1, ax2 = axes[2 * row], axes[2 * row + 1]
        who = f"{entry['title']}: " if len(found) > 1 else ""
        sc = entry["scenarios"]
        names = list(sc)
        short = [n.replace(", THREADPOOL_TOKENS=", "\nTOKENS=") for n in names]
        charts.grouped_bars(
            ax1,
            short,
            {
                "sync endpoint p50": [sc[n]["sync_endpoint_ms"]["p50"] for n in names],
                "sync endpoint max": [sc[n]["sync_endpoint_ms"]["max"] for n in names],
                "async endpoint max": [sc[n]["async_endpoint_ms"]["max"] for n in names],
            },
            ylabel="response time, ms (log)",
            colors={
                "sync endpoint p50": "#fdae6b",
                "sync endpoint max": "#e6550d",
                "async endpoint max": "#1f77b4",
            },
            log=True,
            fmt="{:.0f}",
        )
        ax1.tick_params(axis="x", labelsize=7)
        ax1.set_title(f"{who}a sync endpoint while slow tasks run")
        for j, n in enumerate(names):
            xs = [x for x, _ in sc[n]["sync_timeline"]]
            ys = [y for _, y in sc[n]["sync_timeline"]]
            ax2.plot(
                xs,
                ys,
                marker=".",
                linewidth=1,
                label=short[j].replace("\n", ", "),
                color=charts.PALETTE[j % len(charts.PALETTE)],
            )
        ax2.set_yscale("log")
        ax2.set_xlabel("probe sent at, s after the tasks were fired")
        ax2.set_ylabel("sync endpoint response, ms (log)")
        ax2.legend(fontsize=7)
        ax2.set_title(f"{who}each probe of the sync endpoint")
    charts.save(fig, path, data)
