"""The table across every implementation (``<!-- generated: queues -->``, in the
README below the guide): what a kill does to each, when a task runs twice, what each
can do, what watches it, what its hand-over costs and what it weighs idle.

Crash cells come from the crash report's rows that each implementation's scenarios
mark for a column (``Scenario.column``); cost and footprint from their reports; what
an implementation can do, its own words with links to the tests that show it
(``ImplementationSpec.cells``). A cell with nothing measured says so."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.crash.scenario import Scenario
from experiments.reporting.crash import anchor, broker_label, shown
from experiments.reporting.decision import BROKER_NAMES, CAPACITY, FOOTPRINT, cost, hand_overs
from experiments.reporting.report import load_if_any
from experiments.reporting.tables import markdown_table
from shared.services import IMPLEMENTATIONS, Implementation, ImplementationSpec, declared

CRASH = "docs/crash.md"
NOT_MEASURED = "not measured"
# What an implementation says of itself (``ImplementationSpec.cells``), by column.
CLAIMS = ("retries", "schedule", "time limits", "dead letters", "monitoring", "brokers")
# The table's rows (an implementation a column: five of them fit a page, a dozen
# properties do not).
ROWS = [
    "API SIGKILL",
    "worker SIGKILL, this project's settings",
    "worker SIGKILL, the library's defaults",
    "runs a task twice",
    *CLAIMS,
    "API CPU per hand-over, requests/s (one process)",
    "idle footprint",
]


def _back(o: Mapping[str, Any]) -> str:
    after = o.get("redelivered_after")
    return f", back after {after[0]:.1f} s" if after else ""


def _unsettled(o: Mapping[str, Any]) -> int:
    summary = o.get("summary") or {}
    return int(summary.get("awaiting_redelivery", 0)) + int(summary.get("in_flight", 0))


def crash_result(o: Mapping[str, Any]) -> str:
    """One crash row, in a few words: what was lost, parked or left waiting."""
    parts = [f"{o['lost']} of {o['submitted']} lost"]
    parked = {"abandoned": o.get("abandoned", 0), "dead-lettered": o.get("dead_lettered", 0)}
    parts += [f"{n} {fate}" for fate, n in parked.items() if n]
    if waiting := _unsettled(o):
        window = o.get("window")
        parts.append(f"{waiting} still waiting" + (f" at {window:g} s" if window else ""))
    if not o.get("redelivered_after") and o.get("retried") and o.get("last_completed_after"):
        # Not handed out again but retried (RQ's Retry after its cleanup): when it ended.
        parts.append(f"retried, all done after {o['last_completed_after']:.1f} s")
    return ", ".join(parts) + _back(o)


def crash_cell(
    scenarios: Sequence[Scenario], rows: Sequence[Mapping[str, Any]], column: str
) -> str:
    """The rows of ``scenarios`` marked for ``column``, each a link to its row."""
    keys = [s.key for s in scenarios if s.column == column]
    found = [o for key in keys for o in shown(rows) if o["key"] == key and o["status"] == "ok"]
    if not keys:
        return "—"
    if not found:
        return NOT_MEASURED
    cells = []
    for o in found:
        broker = o.get("broker") or ""
        on = f"{broker_label(o)}: " if broker else f"`{o['key']}`: " if len(keys) > 1 else ""
        link = f"{CRASH}#{anchor(o['key'], broker)}"
        cells.append(f"{on}[{crash_result(o)}]({link})")
    return "<br>".join(cells)


def twice_cell(scenarios: Sequence[Scenario], rows: Sequence[Mapping[str, Any]], when: str) -> str:
    """When a task runs twice (the implementation's words), and how often it did."""
    keys = [s.key for s in scenarios if s.column == "runs-twice"]
    found = [o for key in keys for o in rows if o["key"] == key and o.get("status") == "ok"]
    measured = [
        f"[{o['executed_more_than_once']} of {o['submitted']} ran twice]"
        f"({CRASH}#{anchor(o['key'], o.get('broker') or '')})"
        for o in found[:1]
    ]
    return "; ".join([when, *measured]) if when else "; ".join(measured) or "—"


def footprint_cell(impl: Implementation, sides: Mapping[str, Mapping[str, Any]]) -> str:
    found = [
        (key, side)
        for key, side in sides.items()
        if side.get("implementation", key.split(" on ")[0]) == impl.value
    ]
    if not found:
        return NOT_MEASURED
    return "<br>".join(
        f"[{side['idle_rss_mib']:.0f} MiB]({FOOTPRINT})"
        + (f" ({BROKER_NAMES.get(b, b)})" if (b := side.get("broker")) else "")
        for key, side in found
    )


def cost_cell(impl: Implementation, reports: Path) -> str:
    found = [h for h in hand_overs(reports) if h.implementation == impl]
    return (
        "<br>".join(
            (f"{h.broker}: " if h.broker and len(found) > 1 else "") + f"[{cost(h)}]({CAPACITY})"
            for h in found
        )
        or NOT_MEASURED
    )


def cells_of(spec: ImplementationSpec) -> Mapping[str, str]:
    found: Mapping[str, str] = declared(spec.cells)() if spec.cells else {}
    return found


def scenarios_of(spec: ImplementationSpec) -> Sequence[Scenario]:
    found: Sequence[Scenario] = declared(spec.scenarios) if spec.scenarios else ()
    return found


def columns(reports: Path) -> list[list[str]]:
    """Each implementation's cells, in ROWS' order, its title first."""
    crash = (load_if_any("crash", reports) or {}).get("scenarios", [])
    sides = (load_if_any("footprint", reports) or {}).get("sides", {})
    out = []
    for impl, spec in IMPLEMENTATIONS.items():
        scenarios, said = scenarios_of(spec), cells_of(spec)
        worker = (
            "the API is its worker"
            if spec.runs_the_work == spec.api
            else crash_cell(scenarios, crash, "worker-kill")
        )
        stock = (
            worker
            if spec.runs_the_work == spec.api
            else crash_cell(scenarios, crash, "worker-kill-stock")
        )
        out.append(
            [
                spec.title,
                crash_cell(scenarios, crash, "api-kill"),
                worker,
                stock,
                twice_cell(scenarios, crash, said.get("runs twice", "")),
                *(said.get(claim, "—") for claim in CLAIMS),
                cost_cell(impl, reports),
                footprint_cell(impl, sides),
            ]
        )
    return out


def render_from(reports: Path) -> str:
    cols = columns(reports)
    return markdown_table(
        ["", *(c[0] for c in cols)],
        [[f"**{name}**", *(c[i + 1] for c in cols)] for i, name in enumerate(ROWS)],
    )
