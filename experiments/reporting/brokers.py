"""The broker comparison: one table drawn from the crash, dispatch and footprint
reports of the same reference run (``<!-- generated: brokers -->`` in docs/)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.reporting.crash import when_ran
from experiments.reporting.dispatch import entries
from experiments.reporting.report import load_if_any
from experiments.reporting.tables import markdown_table
from shared.services import IMPLEMENTATIONS

# The first implementation that runs on the stack's broker, Redis or RabbitMQ: the one
# whose rows are compared here (each further one's are in the crash table and its page).
ON_BROKERS = next(impl for impl, spec in IMPLEMENTATIONS.items() if "broker" in spec.needs)
TITLE = IMPLEMENTATIONS[ON_BROKERS].title

# (crash scenario key, what it shows)
ROWS = [
    ("worker-kill", "worker SIGKILL mid-task (acks_late)"),
    ("worker-kill-two-workers", "one of two workers SIGKILL: the survivor takes its task"),
    ("worker-kill-stock-acks", "worker SIGKILL, stock acks"),
    ("broker-restart", "broker SIGKILL + restart"),
    ("slow-task", "task longer than Redis's visibility timeout"),
    ("long-countdown", "retry countdown longer than the visibility timeout"),
    ("consumer-timeout", "task longer than RabbitMQ's consumer_timeout"),
]


def outcome_cell(o: Mapping[str, Any] | None) -> str:
    if o is None:
        return "—"
    if o["status"] != "ok":
        return f"{o['status']}"
    parts = [f"{o['lost']} lost of {o['submitted']}"]
    if o["executed_more_than_once"]:
        parts.append(f"{o['executed_more_than_once']} ran twice")
    if o["redelivered_after"] is not None:
        parts.append(f"rerun {o['redelivered_after'][0]:.1f} s after the kill")
    if o["duplicate_effects"]:
        parts.append(f"{o['duplicate_effects']} written twice")
    return ", ".join(parts)


def render_from(reports: Path) -> str:
    crash = load_if_any("crash", reports) or {"scenarios": []}
    by = {(o["key"], o.get("broker")): o for o in crash["scenarios"]}
    rows = [
        [what, outcome_cell(by.get((key, "redis"))), outcome_cell(by.get((key, "rabbitmq")))]
        for key, what in ROWS
    ]
    dispatch = load_if_any("dispatch", reports)
    # The implementation measured on both brokers: its publish, on each.
    both = [e for e in (entries(dispatch) if dispatch else {}).values() if e.get("rabbitmq")]
    for entry in both[:1]:
        publish = entry["profiled"]
        redis_p50 = entry["variants"][publish]["p50"]
        rabbit_p50 = entry["rabbitmq"]["variants"][publish]["p50"]
        rows.append(
            [f"one `{publish}`, p50 (publisher confirms on RabbitMQ)",
             f"{redis_p50:.0f} µs", f"{rabbit_p50:.0f} µs"]
        )  # fmt: skip
    footprint = load_if_any("footprint", reports)
    if footprint:
        sides = footprint["sides"]
        cells = [
            f"{sides[s]['idle_rss_mib']:.0f} MiB" if s in sides else "—"
            for s in (ON_BROKERS.value, f"{ON_BROKERS.value} on rabbitmq")
        ]
        rows.append([f"{TITLE}'s resident memory, idle (broker included)", *cells])
    when = when_ran(crash, [o for o in crash["scenarios"] if o.get("broker")])
    return (
        markdown_table(["", f"{TITLE} on Redis", f"{TITLE} on RabbitMQ"], rows)
        + f"\n\n*From the reference run's `crash`, `dispatch` and `footprint` reports ({when});"
        " the scenarios' own rows, with their settings, are in [the crash table](crash.md).*"
    )
