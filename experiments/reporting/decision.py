"""The README's decision guide: which one, in a few lines, each with its number from
the reference run (``<!-- generated: decision -->``) and a link to its table or its test.
Each implementation in the guide writes its own lines (``ImplementationSpec.guide``)
with the readers here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class HandOver:
    """One implementation's route on one process, from the capacity report."""

    implementation: Implementation
    title: str  # with its broker, where the report ran several
    broker: str  # "" where it has none, or the report ran it on one
    cpu_us: float | None  # the API's CPU per task beyond a bare route's
    per_s: float
    does_the_work: bool  # the API runs the task itself (its cost included)


def hand_overs(reports: Path) -> list[HandOver]:
    """What the hand-over costs the API per task, and what one process takes: each
    measured implementation's route, on one process, its sent events (if it has
    any) as they are by default."""
    data = load_if_any("capacity", reports) or {}
    runs = [r for r in data.get("runs", []) if r["processes"] == 1 and not r.get("switched")]
    out = []
    for ladder in (lad for run in runs for lad in run["ladders"]):
        rungs = ladder["levels"][str(max(int(c) for c in ladder["levels"]))]
        cpu = rungs.get("default", {}).get("cpu_us"), rungs.get("bare", {}).get("cpu_us")
        broker = ladder.get("broker")
        impl = Implementation(ladder["implementation"])
        out.append(
            HandOver(
                implementation=impl,
                title=ladder["title"]
                + (f" on {BROKER_NAMES.get(broker, broker)}" if broker else ""),
                broker=BROKER_NAMES.get(broker, broker) if broker else "",
                cpu_us=None if None in cpu else (cpu[0] - cpu[1]) / 2,
                per_s=rungs.get("default", {}).get("per_s", 0),
                does_the_work=IMPLEMENTATIONS[impl].delivery == Delivery.in_process,
            )
        )
    return out


def cost(h: HandOver) -> str:
    cpu = "?" if h.cpu_us is None else f"{h.cpu_us:,.0f} µs"
    return f"{cpu}" + (" (the work included)" if h.does_the_work else "") + f", {h.per_s:,.0f}/s"


def _capacity(reports: Path) -> str:
    each = "; ".join(f"{h.title} {cost(h)}" for h in hand_overs(reports))
    if not each:
        return ""
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
