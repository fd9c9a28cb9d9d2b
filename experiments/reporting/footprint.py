"""The footprint report (``python -m experiments footprint``): its markdown and its chart.

``sides`` is keyed by an implementation's value, followed by ``on <broker>`` where
it hands its tasks to the stack's broker and that broker is not the first one
measured (``celery on rabbitmq``). A side's ``implementation`` and ``broker`` (the
broker whose processes it counts) are read from its key where a report predates them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.perf import base
from experiments.reporting.tables import markdown_table
from shared.services import IMPLEMENTATIONS, SERVICES, Delivery, Implementation, delivery_of

# A broker as the reports name it.
BROKER_NAMES = {"redis": "Redis", "rabbitmq": "RabbitMQ"}
ON = " on "


def side_of(key: str, side: Mapping[str, Any]) -> tuple[str, str | None]:
    """A side's implementation (its value) and the broker it counts (None: none)."""
    if "implementation" in side:
        return str(side["implementation"]), side.get("broker")
    impl, _, broker = key.partition(ON)
    if broker:
        return impl, broker
    return impl, next((b for b in BROKER_NAMES if b in side["processes"]), None)


def title_of(impl: str) -> str:
    """A measured implementation's title (one no longer declared: its value)."""
    return IMPLEMENTATIONS[Implementation(impl)].title if impl in IMPLEMENTATIONS else impl


def broker_name(broker: str) -> str:
    return BROKER_NAMES.get(broker, broker)


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _children(data: dict[str, Any]) -> list[str]:
    """A sentence for each worker row that is several processes: its main one and its pool's."""
    said: dict[str, str] = {}
    for key, side in data["sides"].items():
        impl, _ = side_of(key, side)
        if impl not in IMPLEMENTATIONS or not base.works_apart(impl):
            continue
        worker = IMPLEMENTATIONS[Implementation(impl)].runs_the_work
        row = side["processes"].get(worker)
        if row is None or row["idle"]["processes"] < 2 or worker in said:
            continue
        pool = base.pool_of(impl)
        count = row["idle"]["processes"] - 1
        children = f"{pool} children" if pool else "child process" + ("es" if count > 1 else "")
        said[worker] = f"The {worker} row is its main process plus its {children} ({count})."
    return list(said.values())


def _brokers(data: dict[str, Any]) -> str:
    """Which broker each side counts, and why the ledger's Redis is counted on no other."""
    sides = [(side_of(k, s), s) for k, s in data["sides"].items()]
    on_redis = list(dict.fromkeys(title_of(i) for (i, b), _ in sides if b == "redis"))
    text = (
        f"Redis is listed on the {_and(on_redis)} side{'s' if len(on_redis) > 1 else ''} "
        "when it is the broker"
        if on_redis
        else ""
    )
    for broker in dict.fromkeys(b for (_, b), _ in sides if b not in (None, "redis")):
        extras = [
            p
            for (_, b), s in sides
            if b == broker
            for p in s["processes"]
            if p not in SERVICES and p != broker
        ]
        name = broker_name(str(broker))
        with_its = f" (with its {_and(list(dict.fromkeys(extras)))})" if extras else ""
        text += f"{'; on' if text else 'On'} {name} the broker is {name}{with_its}"
    others = sum(1 for (_, b), _ in sides if b != "redis")
    where = {1: "the other side", 2: "neither side"}.get(others, "no other side")
    text += (
        f"{', and the' if text else 'The'} ledger's Redis is counted on {where}: "
        "it is the comparison's instrument"
    )
    in_process = [
        title_of(i)
        for (i, _), _ in sides
        if i in IMPLEMENTATIONS and delivery_of(i) == Delivery.in_process
    ]
    if in_process:
        text += (
            f" (the {_and(list(dict.fromkeys(in_process)))} app writes its ledger there when "
            "it is configured, but runs without it)"
        )
    return text + "."


def notes(data: dict[str, Any]) -> str:
    cfg = data["config"]
    parts = [
        f"Load: {cfg['requests']} notification requests per side, {cfg['concurrency']} "
        f"clients, NOTIFICATION_DELAY_SECONDS={cfg['NOTIFICATION_DELAY_SECONDS']}.",
        *_children(data),
        "PSS splits pages shared between processes (forked children) among them; RSS counts "
        "them in each.",
        _brokers(data),
    ]
    if data["target"] == "compose":
        parts.append("Compose: `docker stats` memory per container (RSS and PSS columns equal).")
    return " ".join(parts)


def render(data: dict[str, Any]) -> str:
    rows = []
    for side, d in data["sides"].items():
        for service, r in d["processes"].items():
            rows.append(
                [
                    side,
                    service,
                    r["idle"]["processes"],
                    r["idle"]["rss"],
                    r["load"]["rss"],
                    r["idle"]["pss"],
                    r["load"]["pss"],
                ]
            )
        rows.append(
            [
                f"**{side} total**",
                "",
                "",
                d["idle_rss_mib"],
                d["load_rss_mib"],
                d["idle_pss_mib"],
                d["load_pss_mib"],
            ]
        )
    table = markdown_table(
        [
            "side",
            "process",
            "processes",
            "idle RSS MiB",
            "peak RSS MiB under load",
            "idle PSS MiB",
            "PSS MiB under load",
        ],
        rows,
    )
    table += "\n\n" + markdown_table(
        ["ratio", "value"], [[k, v] for k, v in data["ratios"].items()]
    )
    return f"{table}\n\n{notes(data)}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax1, ax2) = charts.figure(1, 2, size=(5 + 2.2 * len(data["sides"]), 4.8))
    for ax, metric in ((ax1, "rss"), (ax2, "pss")):
        labels: list[str] = []
        for key, d in data["sides"].items():
            impl, broker = side_of(key, d)
            name = title_of(impl) + (f", {broker_name(broker)}" if broker else "")
            in_process = impl in IMPLEMENTATIONS and delivery_of(impl) == Delivery.in_process
            for phase in ("idle", "load"):
                x = len(labels)
                labels.append(f"{name}\n{phase}")
                bottom = 0.0
                for i, (service, r) in enumerate(d["processes"].items()):
                    value = r[phase][metric]
                    color = base.color(impl) if in_process else charts.PALETTE[(i + 1) % 7]
                    ax.bar(
                        x,
                        value,
                        bottom=bottom,
                        color=color,
                        edgecolor="white",
                        label=service if phase == "idle" else None,
                    )
                    bottom += value
                ax.annotate(f"{bottom:.0f}", (x, bottom), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel(f"{metric.upper()}, MiB")
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{metric.upper()} per side, stacked by process")
    ax1.legend(fontsize=7, loc="upper left")
    charts.save(fig, path, data)
