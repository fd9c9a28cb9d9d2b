"""The README's decision guide: which one, in a few lines, each with its number from
the reference run (``<!-- generated: decision -->``) and a link to its table or its test.
Each implementation in the guide writes its own lines (``ImplementationSpec.guide``)
with the readers here."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.reporting.report import load_if_any
from shared.services import IMPLEMENTATIONS, Delivery, Implementation, declared

TESTS = "tests/integration"
HEAVY = "docs/measured.md#heavy-work-cpu-bound-tasks-in-the-api-process"
FOOTPRINT = "docs/measured.md#footprint-resident-memory"
BROKERS = "docs/brokers.md#measured-side-by-side"
CAPACITY = "docs/measured.md#capacity-requests-a-second-at-saturation"
LOST_MACHINE = "docs/brokers.md#when-the-brokers-machine-is-lost"
BROKER_NAMES = {"redis": "Redis", "rabbitmq": "RabbitMQ"}


def scenario(crash: Mapping[str, Any], key: str, broker: str = "") -> Mapping[str, Any]:
    for o in crash.get("scenarios", []):
        if o["key"] == key and (o.get("broker") or "") == broker and o["status"] == "ok":
            found: Mapping[str, Any] = o
            return found
    return {}


def lost(o: Mapping[str, Any]) -> str:
    return f"{o.get('lost', '?')} of {o.get('submitted', '?')}"


def rerun(o: Mapping[str, Any]) -> str:
    after = o.get("redelivered_after")
    return f"{after[0]:.1f} s" if after else "?"


def _capacity(reports: Path) -> str:
    """What the hand-over costs the API per task, and what one process takes: each
    measured implementation's route, on one process, its sent events (if it has
    any) as they are by default."""
    data = load_if_any("capacity", reports) or {}
    runs = [r for r in data.get("runs", []) if r["processes"] == 1 and not r.get("switched")]
    ladders = [lad for run in runs for lad in run["ladders"]]
    if not ladders:
        return ""

    def route(ladder: Mapping[str, Any]) -> Mapping[str, Any]:
        level = str(max(int(c) for c in ladder["levels"]))
        found: Mapping[str, Any] = ladder["levels"][level]
        return found

    def per_task(rungs: Mapping[str, Any]) -> str:
        cpu = rungs.get("default", {}).get("cpu_us"), rungs.get("bare", {}).get("cpu_us")
        if cpu[0] is None or cpu[1] is None:
            return "?"
        return f"{(cpu[0] - cpu[1]) / 2:,.0f} µs"

    def name(ladder: Mapping[str, Any]) -> str:
        broker = ladder.get("broker")
        on = f" on {BROKER_NAMES.get(broker, broker)}" if broker else ""
        return f"{ladder['title']}{on}"

    def does_the_work(ladder: Mapping[str, Any]) -> bool:
        spec = IMPLEMENTATIONS[Implementation(ladder["implementation"])]
        return spec.delivery == Delivery.in_process

    each = "; ".join(
        f"{name(lad)} {per_task(route(lad))}"
        + (" (the work included)" if does_the_work(lad) else "")
        + f", {route(lad).get('default', {}).get('per_s', 0):,.0f}/s"
        for lad in ladders
    )
    return (
        "- **What the hand-over costs the API** (its CPU per task, and the requests a "
        f"second [one process takes]({CAPACITY})): {each}."
    )


def lines(reports: Path) -> list[str]:
    """One line per choice, each implementation's own (``ImplementationSpec.guide``),
    then what the hand-over costs each; every number from the reports, every claim a link."""
    own = [
        line
        for spec in IMPLEMENTATIONS.values()
        if spec.guide is not None
        for line in declared(spec.guide)(reports)
    ]
    return [*own, *([capacity] if (capacity := _capacity(reports)) else [])]


def render_from(reports: Path) -> str:
    return "\n".join(lines(reports))
