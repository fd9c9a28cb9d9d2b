"""When the broker's machine is lost: the partition and failover rows of the crash
report, one table each (``<!-- generated: machine-lost -->`` in docs/brokers.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.reporting.crash import broker_label, when_ran
from experiments.reporting.report import load_if_any
from experiments.reporting.tables import markdown_table

PARTITIONS = ("partition-short", "partition-long")
FAILOVERS = ("sentinel-failover", "sentinel-failover-min-replicas", "cluster-leader-kill")


def _s(v: float | None, never: str = "never") -> str:
    return never if v is None else f"{v:.1f} s"


def _common(o: Mapping[str, Any]) -> list[str]:
    made = "?" if o.get("duplicate_effects") is None else str(o["duplicate_effects"])
    return [f"{o['lost']} of {o['submitted']}", str(o["executed_more_than_once"]), made]


def partition_row(o: Mapping[str, Any]) -> list[str]:
    label = f"{o['key']}: {o['title']}"
    if o["status"] != "ok":
        return [label, broker_label(o), f"{o['status']}: {o['reason']}", "", "", "", "", ""]
    held = "—"
    if o.get("redelivered_after") is not None:
        held = f"taken over {o['redelivered_after'][0]:.1f} s into the cut"
    elif o.get("running_at_kill"):
        held = "waited for the cut worker"
    return [
        label,
        broker_label(o),
        _s(o.get("cut_seconds")),
        *_common(o),
        held,
        _s(o.get("consumed_again_after")),
    ]


def failover_row(o: Mapping[str, Any]) -> list[str]:
    label = f"{o['key']}: {o['title']}"
    if o["status"] != "ok":
        return [label, f"{o['status']}: {o['reason']}", "", "", "", "", "", "", ""]
    exits = o.get("worker_exits") or []
    return [
        label,
        _s(o.get("promoted_after")),
        _s(o.get("publishing_again_after")),
        str(o.get("refused", 0)),
        _s(o.get("consumed_again_after")),
        f"{len(exits)}" + (f" (at {exits[0]:.1f} s)" if exits else ""),
        *_common(o),
    ]


def render_from(reports: Path) -> str:
    crash = load_if_any("crash", reports) or {"scenarios": []}
    rows = crash["scenarios"]
    parts = []
    cut = [partition_row(o) for o in rows if o["key"] in PARTITIONS]
    if cut:
        parts.append(
            markdown_table(
                [
                    "partition",
                    "broker",
                    "cut for",
                    "lost",
                    "ran more than once",
                    "written twice",
                    "the cut worker's tasks",
                    "it consumes again, after the heal",
                ],
                cut,
            )
        )
    lost = [failover_row(o) for o in rows if o["key"] in FAILOVERS]
    if lost:
        parts.append(
            markdown_table(
                [
                    "the leading broker process SIGKILLed for good",
                    "new leader after",
                    "the API publishes again after",
                    "requests refused (503) meanwhile",
                    "a worker consumes again after",
                    "worker exits (restarted)",
                    "lost",
                    "ran more than once",
                    "written twice",
                ],
                lost,
            )
        )
    if not parts:
        return (
            "*No partition or failover rows in the crash report yet: "
            "`python -m experiments crash --scenarios partition-short,partition-long,"
            "sentinel-failover,sentinel-failover-min-replicas,cluster-leader-kill`.*"
        )
    when = when_ran(crash, [o for o in rows if o["key"] in (*PARTITIONS, *FAILOVERS)])
    parts.append(
        f"*From the reference run's `crash` report ({when}); times from the cut or the kill. "
        "The scenarios' settings and notes are in [the crash table](crash.md).*"
    )
    return "\n\n".join(parts)
