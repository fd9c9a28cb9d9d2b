"""The capacity report: its tables, notes and chart, drawn from
``reports/capacity.json`` (``python -m experiments capacity`` measures it). The
reference rungs' names are the report's vocabulary: the experiment imports them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.perf import base
from experiments.reporting.tables import markdown_table
from experiments.stats import ratio
from shared.services import IMPLEMENTATIONS, Delivery, Implementation

FLOOR = "floor"
STOCK = "stock"
STOCK_WITH_EVENTS = "stock-events"
# The setting, per implementation, that sends an event per task published.


def top_level(ladder_data: Mapping[str, Any]) -> str:
    """The highest concurrency a ladder was measured at (the tables show it)."""
    return str(max(int(c) for c in ladder_data["levels"]))


def reference(ladder_data: Mapping[str, Any], level: str, name: str) -> dict[str, Any] | None:
    """A reference rung's summary at ``level``: the floor, or the stock rung with the
    same sent-event setting as the ladder's."""
    rungs = ladder_data["levels"][level]
    if name == STOCK and ladder_data.get("sent_events") and STOCK_WITH_EVENTS in rungs:
        name = STOCK_WITH_EVENTS
    found: dict[str, Any] | None = rungs.get(name)
    return found


def heading(run: Mapping[str, Any], ladder_data: Mapping[str, Any], level: str) -> str:
    p = run["processes"]
    on = f"on {ladder_data['broker']}, " if ladder_data.get("broker") else ""
    events = ladder_data.get("sent_events")
    switch = "" if events is None else f", the project's sent events {'on' if events else 'off'}"
    return (
        f"**{ladder_data['title']}** {on}{p} process{'es' if p > 1 else ''}, "
        f"{level} connections{switch}"
    )


def rows(ladder_data: Mapping[str, Any], level: str) -> list[list[Any]]:
    stock = reference(ladder_data, level, STOCK)
    floor = reference(ladder_data, level, FLOOR)
    out = []
    for name, r in ladder_data["levels"][level].items():
        out.append(
            [
                ladder_data["rungs"].get(name, name),
                r["per_s"],
                r["p50_ms"],
                r["p99_ms"],
                "—" if r["cpu_us"] is None else r["cpu_us"],
                "—" if stock is None else ratio(r["per_s"], stock["per_s"]),
                "—" if floor is None else ratio(r["per_s"], floor["per_s"]),
                r["errors"],
            ]
        )
    return out


def _titles(data: Mapping[str, Any], delivery: Delivery) -> list[str]:
    found = {
        lad["title"]: None
        for run in data["runs"]
        for lad in run["ladders"]
        if IMPLEMENTATIONS[Implementation(lad["implementation"])].delivery == delivery
    }
    return list(found)


def render(data: dict[str, Any]) -> str:
    cfg = data["config"]
    parts = []
    headers = [
        "rung",
        "req/s",
        "p50 ms",
        "p99 ms",
        "API CPU µs/request",
        "× stock (same events)",
        "× floor",
        "errors",
    ]
    for run in data["runs"]:
        for lad in run["ladders"]:
            level = top_level(lad)
            parts.append(
                f"{heading(run, lad, level)}\n\n{markdown_table(headers, rows(lad, level))}"
            )
    check = data.get("cross_check")
    if check and check.get("wrk_per_s"):
        title = IMPLEMENTATIONS[Implementation(check["implementation"])].title
        parts.append(
            f"Cross-check: {title}, {check['rung']}, at {check['concurrency']} connections, "
            f"this client {check['ours_per_s']:.0f} req/s, wrk {check['wrk_per_s']:.0f} req/s "
            f"(wrk/ours {check['wrk_over_ours']:.2f})."
        )
    handing_over = " and ".join(_titles(data, Delivery.broker))
    holding = " and ".join(_titles(data, Delivery.in_process))
    notes = [
        "Closed loop: each of C keep-alive connections sends the next request as soon as "
        f"the last is answered; {cfg['rounds']} slices of {cfg['seconds_per_slice']:g} s per "
        "rung, interleaved, after a warm-up; the API's CPU from its process tree."
    ]
    if handing_over:
        notes.append(
            f"No worker runs: the {handing_over} APIs only hand over (what they publish is "
            "emptied between slices)."
        )
    if holding:
        notes.append(
            f"The {holding} API also does the work (NOTIFICATION_DELAY_SECONDS=0), after it "
            "answers: its slice lasts until that work is done too (its req/s counts the "
            "drain, its CPU the work)."
        )
    notes.append(
        "*× stock*: req/s over the ladder's stock rung (the library as it ships, with the "
        "same sent-event setting where it has one), in the same run; *× floor*: over its "
        "floor, one round trip for both messages. Every process and the client share this "
        "machine's CPUs."
    )
    parts.append(" ".join(notes))
    return "\n\n".join(parts)


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    runs = [r for r in data["runs"] if r["processes"] == 1]
    bars = max((sum(len(lad["rungs"]) for lad in r["ladders"]) for r in runs), default=1)
    width = max(len(runs), 1)
    fig, axes = charts.figure(1, width, size=(6 * width, max(4.8, 1.5 + 0.25 * bars)))
    for ax, run in zip(axes, runs, strict=False):
        names, values, colors = [], [], []
        level = ""
        for lad in run["ladders"]:
            level = top_level(lad)
            for name, r in lad["levels"][level].items():
                names.append(f"{lad['implementation']}: {name}")
                values.append(r["per_s"])
                colors.append(base.color(lad["implementation"]))
        ax.barh(range(len(names)), values, color=colors)
        for y, v in enumerate(values):
            ax.annotate(f"{v:.0f}", (v, y), va="center", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"req/s at {level} connections, 1 process")
        switched = ", sent events switched" if run.get("switched") else ""
        ax.set_title(f"{run['broker']}{switched}", fontsize=9)
    charts.save(fig, path, data)
