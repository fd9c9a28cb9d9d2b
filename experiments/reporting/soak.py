"""The soak's report: its table and notes, drawn from ``reports/soak.json``
(``python -m experiments soak`` measures it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.reporting.tables import markdown_table

# The faults, by what they hit: every implementation's API, every one's work runner
# (one copy each), the broker, the ledger's Redis (when it is not the broker), and a
# partition of the work runners that reach a broker.
API, WORK, BROKER, LEDGER, PARTITION = "api", "work", "broker", "redis", "partition"

COLUMNS = [
    "accepted",
    "completed",
    "lost",
    "failed",
    "skipped",
    "in_flight_at_the_end",
    "executed_more_than_once",
    "duplicate_effects",
    "skipped_writes",
    "refused_requests",
]


def title_of(impl: str, data: Mapping[str, Any]) -> str:
    role: Mapping[str, Any] = data["config"]["plan"].get(impl, {})
    return str(role.get("title", impl))


def render(data: dict[str, Any]) -> str:
    impls: dict[str, dict[str, Any]] = data["implementations"]
    titles = {impl: title_of(impl, data) for impl in impls}
    table = markdown_table(
        ["implementation", *[k.replace("_", " ") for k in COLUMNS]],
        [[titles[impl], *[s[k] for k in COLUMNS]] for impl, s in impls.items()],
    )
    by_services: dict[str, list[dict[str, Any]]] = {}
    for f in data["faults"]:
        names = ", ".join(f["services"])
        label = f"{names} cut off" if f["kind"] == PARTITION else names
        by_services.setdefault(label, []).append(f)
    table += "\n\n" + markdown_table(
        [
            "fault (SIGKILL + restart; or cut off its broker, healed)",
            "times",
            *[f"{titles[impl]} in flight then" for impl in impls],
            "back after, s (mean)",
        ],
        [
            [
                label,
                len(fs),
                *[sum(f["in_flight"].get(impl, 0) for f in fs) for impl in impls],
                sum(f["down_s"] for f in fs) / len(fs),
            ]
            for label, fs in by_services.items()
        ],
    )
    table += "\n\n" + markdown_table(
        ["target", "measured", "met"],
        [[t["target"], t["measured"], "yes" if t["met"] else "no"] for t in data["targets"]],
    )
    return f"{table}\n\n{notes(data, titles)}"


def notes(data: Mapping[str, Any], titles: Mapping[str, str]) -> str:
    c = data["config"]
    plan: Mapping[str, Mapping[str, Any]] = c["plan"]
    roles = "; ".join(
        f"{titles[impl]}: API {role['api']}, work run by {role['runs_the_work']} "
        f"({role['delivery']})"
        for impl, role in plan.items()
    )
    cut = [role["runs_the_work"] for role in plan.values() if role["partitioned"]]
    losses = " ".join(
        f"{titles[impl]} lost {s['lost']}: {s['lost_held_by_a_killed_process']} held by a "
        f"process of its at the moment that process was killed, {s['lost_never_started']} "
        f"never started, {s['lost_otherwise']} otherwise (the ledger showed "
        f"{s['in_flight_just_before_its_kills']} in flight on its killed processes just "
        "before the kills)."
        for impl, s in data["implementations"].items()
        if s["lost"]
    )
    return (
        f"{c.get('traffic_s', c['duration_s']):g} s of traffic, "
        f"{c['rate_per_implementation']:g} notification requests per second to each "
        f"implementation (each: the {c['delay']:g} s notification and a log line), a "
        f"fault every {c['fault_every_s']:g} s in turn ({', '.join(c['fault_cycle'])}), "
        f"each hitting every implementation at once. {roles}. {c['workers']} copies of a "
        "work runner where the stack runs several (each kill takes one, in turn), each "
        f"running {c['worker_concurrency']} tasks at once; each partition cuts "
        f"{', '.join(cut) or 'nothing'} off its broker for {c['cut_s']:g} s, its "
        f"connections open, then heals it. Broker: {c['broker']}; Redis with its "
        "append-only file on; a dead worker's task due back at most "
        f"{c['redelivery_horizon_s']:g} s after its delivery. Counted by "
        f"`shared/verdict.py` once every task had a final verdict ({data['settle']}). "
        f"{losses + ' ' if losses else ''}Refused requests were answered 503 (the broker "
        "down) or found no API (it was being restarted): never accepted, so never counted."
    )
