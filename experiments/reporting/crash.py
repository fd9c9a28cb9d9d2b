"""The crash experiment's table and notes, rendered from its JSON report.

Rendered from the data (not from live objects), so that ``python -m experiments
docs`` draws the same table from the committed ``reports/crash.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from experiments.reporting.tables import markdown_table
from shared.services import IMPLEMENTATIONS, Implementation

HEADERS = [
    "implementation",
    "scenario",
    "broker",
    "tasks submitted",
    "at the kill: running / queued",
    "completed",
    "lost",
    "failed / gave up",
    "abandoned / dead-lettered",
    "handed out",
    "executed more than once",
    "repeat writes: skipped / made",
    "retried",
    "redelivered after",
    "last task completed after",
]


def _secs(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} s"


def _span(lo_hi: Sequence[float]) -> str:
    lo, hi = lo_hi
    return f"{lo:.1f} s" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}–{hi:.1f} s"


BROKER_LABELS = {
    "redis": "Redis",
    "rabbitmq": "RabbitMQ (quorum)",
    "rabbitmq-classic": "RabbitMQ (classic)",
    "sentinel": "Redis Sentinel (a primary, a replica, 3 sentinels)",
    "rabbitmq-cluster": "RabbitMQ cluster of 3 (quorum)",
}
# What a classic queue's row must differ in from the quorum queue's to be shown.
RESULT = (
    "status",
    "lost",
    "completed",
    "failed",
    "gave_up",
    "abandoned",
    "dead_lettered",
    "executed_more_than_once",
    "duplicate_effects",
    "handed_out",
)


def when_ran(data: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """When these rows were measured: each row's own stamp (a merged report), or the
    report's."""
    default = (data.get("machine") or {}).get("when", "?")
    return ", ".join(sorted({o.get("ran") or default for o in rows})) or default


def broker_label(o: Mapping[str, Any]) -> str:
    broker = o.get("broker") or ""
    return BROKER_LABELS.get(broker, broker) or "—"


def shown(scenarios: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every row but a classic queue's that comes out as its quorum queue's does."""
    quorum = {o["key"]: o for o in scenarios if o.get("broker") == "rabbitmq"}

    def same(o: Mapping[str, Any]) -> bool:
        q = quorum.get(o["key"])
        return q is not None and all(q.get(k) == o.get(k) for k in RESULT)

    return [o for o in scenarios if not (o.get("broker") == "rabbitmq-classic" and same(o))]


def implementation_title(o: Mapping[str, Any]) -> str:
    return IMPLEMENTATIONS[Implementation(o["implementation"])].title


def anchor(key: str, broker: str = "") -> str:
    """The id of a row of the table (another table's cells link to it)."""
    return f"crash-{key}" + (f"-{broker}" if broker else "")


def row(o: Mapping[str, Any]) -> list[str]:
    label = f'<a id="{anchor(o["key"], o.get("broker") or "")}"></a>{o["key"]}: {o["title"]}'
    broker = broker_label(o)
    impl = implementation_title(o)
    if o["status"] != "ok":
        return [impl, label, broker, f"{o['status']}: {o['reason']}"] + [""] * (len(HEADERS) - 4)
    redelivered = "—" if o["redelivered_after"] is None else _span(o["redelivered_after"])
    killed = o["stopped_after"] is not None and o["running_at_kill"] + o["queued_at_kill"] > 0
    at_kill = f"{o['running_at_kill']} / {o['queued_at_kill']}" if killed else "—"
    made = "?" if o["duplicate_effects"] is None else o["duplicate_effects"]
    lost = str(o["lost"]) + (f" (+{o['skipped']} skipped)" if o.get("skipped") else "")
    # Still unsettled at the reading (a fixed window): neither lost nor done.
    waiting = (o.get("summary") or {}).get("awaiting_redelivery", 0) + (o.get("summary") or {}).get(
        "in_flight", 0
    )
    if waiting:
        lost += f" ({waiting} unsettled)"
    never = o["lost"] > 0
    return [
        impl,
        label,
        broker,
        str(o["submitted"]),
        at_kill,
        str(o["completed"]),
        lost,
        f"{o.get('failed', 0)} / {o.get('gave_up', 0)}",
        f"{o.get('abandoned', 0)} / {o.get('dead_lettered', 0)}",
        "—" if o.get("handed_out") is None else f"{o['handed_out']} in {o['window']:g} s",
        str(o["executed_more_than_once"]),
        f"{o['skipped_writes']} / {made}",
        str(o["retried"]),
        redelivered,
        "never" if never else "not yet" if waiting else _secs(o["last_completed_after"]),
    ]


def table(data: Mapping[str, Any]) -> str:
    return markdown_table(HEADERS, [row(o) for o in shown(data["scenarios"])])


def table_of(data: Mapping[str, Any], impl: Implementation) -> str:
    """One implementation's rows (its own page shows them), without its column."""
    rows = [row(o)[1:] for o in shown(data["scenarios"]) if o["implementation"] == impl.value]
    return markdown_table(HEADERS[1:], rows) if rows else "*Not measured yet.*"


def notes(data: Mapping[str, Any]) -> str:
    p = data["params"]
    lines = [
        f"Target: {data['target']}. {p['tasks']} notification requests per scenario, each "
        f"scheduling 2 tasks (the {p['delay']:g} s notification, then a log line); "
        f"worker concurrency {p['concurrency']} (a worker's processes, or its task slots); "
        f"a dead worker's task comes back {p['visibility']:g} s after its delivery, found "
        f"by a scan every {p['restore_interval']:g} s (each implementation's declared "
        "horizon, where a timeout decides: RabbitMQ has none, it requeues a dead "
        "consumer's messages when its connection closes).",
        "",
        "- *at the kill*: the ledger just before the signal (the kill waits until the "
        "notifications are `running`); a worker runs as many as its concurrency, the rest "
        "are queued in the broker.",
        "- *lost*, *completed*, *executed more than once*: the verdict of `shared/verdict.py`, "
        "the same rule for every implementation and for the lab. Held in process memory "
        "(BackgroundTasks): lost as soon as the process that held the task is gone. With a "
        "broker: lost only once the declared redelivery is due and a live worker has been "
        "free for a while without taking it, or at once where nothing redelivers (a popped "
        "message, a task acknowledged as it started).",
        "- *repeat writes*: runs that found the task's log line already written and skipped "
        "it (the idempotency check, from the process output) / tasks with more than one "
        "line in the log file.",
        "- *failed / gave up*: failed for good (retries spent, a time limit); given up on "
        "after a bound on its deliveries (a task that kills its process every time).",
        "- *abandoned / dead-lettered*: parked where someone can get it back: recorded "
        "failed by the queue without finishing (RQ's failed job registry), or set aside by "
        "the broker after a delivery limit (a dead-letter queue).",
        "- *handed out*: the scenarios that watch a fixed window instead of waiting for the "
        "tasks to settle (a task that hangs or loops for ever never does): how often the "
        "broker handed the notification to a worker in it (the worker's `received` lines).",
        "- *unsettled*: at a fixed window's reading, still in flight or awaiting "
        "redelivery: neither lost nor done (a task that hangs or loops, or one nothing "
        "claims).",
        "- *broker*: RabbitMQ's rows are on a quorum queue, the default; a classic queue's "
        "row is shown only where it comes out otherwise.",
        "- times are from the signal (the scenarios that kill nothing: from the submission).",
        "",
    ]
    ran = sorted({o["ran"][:10] for o in data["scenarios"] if o.get("ran")})
    if len(ran) > 1:
        lines += [
            f"Rows from more than one run, with the same parameters ({', '.join(ran)}): "
            "each row's `ran` in the JSON says when.",
            "",
        ]
    hidden = [o for o in data["scenarios"] if o not in shown(data["scenarios"])]
    if hidden:
        same = ", ".join(dict.fromkeys(o["key"] for o in hidden))
        lines += [f"On a classic queue, as on the quorum queue: {same}.", ""]
    for o in data["scenarios"]:
        on = f" on {broker_label(o)}" if o.get("broker") else ""
        label = f"**{implementation_title(o)}, {o['key']}: {o['title']}**{on}"
        if o["status"] != "ok":
            lines.append(f"- {label}: {o['status']}: {o['reason']}")
            continue
        extra = []
        if o["finished_while_stopping"]:
            extra.append(f"{o['finished_while_stopping']} finished during the shutdown")
        if o["missing_from_ledger"]:
            extra.append(f"{o['missing_from_ledger']} gone from the ledger itself")
        if o.get("handed_out") is not None:
            extra.append(
                f"handed out {o['handed_out']} times in {o['window']:g} s, at most "
                f"{o['most_runs']} runs of one task"
            )
        if o.get("gave_up"):
            extra.append(f"{o['gave_up']} given up")
        if o.get("cut_seconds") is not None:
            again = o.get("consumed_again_after")
            extra.append(
                f"cut off its broker for {o['cut_seconds']:g} s; "
                + (
                    f"it ran a task again {again:.1f} s after the heal"
                    if again is not None
                    else "it ran no task again after the heal"
                )
            )
        if o.get("killed"):
            extra.append(
                f"{o['killed']} SIGKILLed for good; a new leader after "
                f"{_secs(o.get('promoted_after'))}, the API published again after "
                f"{_secs(o.get('publishing_again_after'))} ({o.get('refused', 0)} requests "
                f"refused meanwhile), a worker consumed again after "
                f"{_secs(o.get('consumed_again_after'))}"
            )
            exits = o.get("worker_exits") or []
            if exits:
                at = ", ".join(f"{x:.1f} s" for x in exits)
                extra.append(
                    f"a worker exited by itself {len(exits)} time(s), at {at} (a kombu error "
                    "on its reconnect), and was started again, as a restart policy would"
                )
        if o["redelivered_after"] is not None:
            by = ", ".join(o.get("rerun_by") or [])
            extra.append(
                f"the interrupted tasks started again {_span(o['redelivered_after'])} "
                "after the signal" + (f" (run by {by})" if by else "")
            )
        revived = o["restarted_after"] is not None and o.get("cut_seconds") is None
        if revived and o.get("consumed_again_after") is not None and not o.get("killed"):
            extra.append(
                f"the whole command exited {o['stopped_after']:.1f} s after the kill, was "
                f"started again ({o['restarted_after']:.1f} s), as a restart policy would, "
                f"and ran a task again {o['consumed_again_after']:.1f} s after the kill"
            )
        elif o["restarted_after"] is not None and o["running_at_kill"] + o["queued_at_kill"] == 0:
            extra.append(
                f"the worker exited by itself {o['stopped_after']:.1f} s in and was started "
                f"again ({o['restarted_after']:.1f} s)"
            )
        elif o["restarted_after"] is not None:
            extra.append(f"back up {o['restarted_after']:.1f} s after the signal")
        detail = f" ({'; '.join(extra)})" if extra else ""
        lines.append(
            f"- {label}: expected: {o['expected']}. "
            f"Measured: {o['lost']} lost of {o['submitted']}{detail}. Settled: {o['settle']}."
        )
    return "\n".join(lines)


def render(data: Mapping[str, Any]) -> str:
    """The table and the notes: the report's markdown, and the generated doc's."""
    return f"{table(data)}\n\n{notes(data)}"


def merge(
    previous: Mapping[str, Any] | None,
    data: Mapping[str, Any],
    *,
    order: Sequence[str],
    brokers_of: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """``data``'s rows, and ``previous``'s for the (scenario, broker) pairs it did not
    run, in scenario order; each row stamped with when it ran. A previous row of a
    scenario gone, or on a broker its scenario no longer runs on (``brokers_of``), goes."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    new = [{**o, "ran": o.get("ran") or now} for o in data["scenarios"]]
    done = {(o["key"], o["broker"]) for o in new}
    then = (previous or {}).get("machine", {}).get("when", "")
    kept = [
        {**o, "ran": o.get("ran") or then}
        for o in (previous or {}).get("scenarios", [])
        if (o["key"], o["broker"]) not in done
        and o["key"] in order
        and (brokers_of is None or (o["broker"] or "") in brokers_of.get(o["key"], ()))
    ]
    brokers = [*(previous or {}).get("brokers", []), *data["brokers"]]
    rank = {key: i for i, key in enumerate(order)}
    scenarios = sorted([*kept, *new], key=lambda o: rank[o["key"]])
    return {**data, "brokers": list(dict.fromkeys(brokers)), "scenarios": scenarios}
