"""The loop-lag report (``python -m experiments loop-lag``): its markdown and its chart.

A report holds one entry per implementation that runs its tasks in its API's own
process (``implementations``: title, idle baseline, variants). A report written
before the experiment iterated over the declaration holds one implementation's
``idle_ms`` and ``variants`` at its top level; it renders as that one entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.reporting.tables import markdown_table, targets_table

# The way of writing a task that blocks the event loop (``time.sleep`` inside
# ``async def``): its target is the block itself, and its chart is drawn in red.
BLOCKING = "blocking-async-task"


def entries(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each measured implementation's entry, by its value ("" for a report that
    predates the entries and names none)."""
    if "implementations" in data:
        found: dict[str, dict[str, Any]] = data["implementations"]
        return found
    return {"": {"title": "", "idle_ms": data["idle_ms"], "variants": data["variants"]}}


def _table(entry: dict[str, Any]) -> str:
    rows = [
        [
            v,
            d["ran_on_loop_thread"],
            d["probes"],
            d["lag_ms"]["p50"],
            d["lag_ms"]["p99"],
            d["lag_ms"]["max"],
        ]
        for v, d in entry["variants"].items()
    ]
    return markdown_table(
        ["task", "ran on the loop's thread", "probes", "lag p50 ms", "lag p99 ms", "lag max ms"],
        rows,
    )


def render(data: dict[str, Any]) -> str:
    found = entries(data)
    several = len(found) > 1
    tables = [(f"**{e['title']}**\n\n" if several else "") + _table(e) for e in found.values()]
    table = "\n\n".join(tables) + "\n\n" + targets_table(data["targets"])
    cfg = data["config"]
    idle = "; ".join(
        (f"{e['title']}: " if several else "")
        + f"{e['idle_ms']['p50']:.2f} ms; idle p99 {e['idle_ms']['p99']:.2f} ms, "
        f"{e['idle_ms']['probes']} probes"
        for e in found.values()
    )
    notes = (
        f"One task of {cfg['seconds']:g} s per row; a `GET /health` probe every "
        f"{cfg['probe_every_ms']:g} ms, sent on schedule whether or not earlier ones were "
        f"answered. Lag = response time − the idle median ({idle}). Probe client and "
        f"server share {data['conditions']['cpus']} CPUs; load average at the start: "
        f"{data['conditions']['loadavg_1m']}."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.perf.base import color
    from experiments.reporting import charts

    found = entries(data)
    fig, axes = charts.figure(2 * len(found), 2, size=(11, 6.5 * len(found)))
    seconds = data["config"]["seconds"]
    top = max(
        (lat for e in found.values() for d in e["variants"].values() for _, lat in d["timeline"]),
        default=10.0,
    )
    panels = [(impl, e, v, d) for impl, e in found.items() for v, d in e["variants"].items()]
    for ax, (impl, entry, v, d) in zip(axes, panels, strict=False):
        xs = [s for s, _ in d["timeline"]]
        ys = [lat for _, lat in d["timeline"]]
        calm = color(impl) if impl else charts.PALETTE[0]
        ax.scatter(xs, ys, s=4, color="#d62728" if v == BLOCKING else calm)
        t0 = d["scheduled_at_s"]
        if t0 == t0:  # NaN: no task was scheduled
            ax.axvspan(t0, t0 + seconds, color="#ffcc80", alpha=0.35, label="task runs")
        ax.set_yscale("log")
        ax.set_ylim(0.5, top * 2)
        ax.axhline(entry["idle_ms"]["p50"] + 5, color="#555555", linestyle=":", linewidth=1)
        who = f"{entry['title']}, " if len(found) > 1 else ""
        ax.set_title(
            f"{who}{v}: lag p99 {d['lag_ms']['p99']:.1f} ms, max {d['lag_ms']['max']:.0f} ms",
            fontsize=9,
        )
        ax.set_xlabel("probe sent at, s")
        ax.set_ylabel("/health response, ms (log)")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"event-loop lag while one {seconds:g}-s background task runs "
        f"(probe every {data['config']['probe_every_ms']:g} ms; dotted: idle + 5 ms)",
        fontsize=10,
    )
    charts.save(fig, path, data)
