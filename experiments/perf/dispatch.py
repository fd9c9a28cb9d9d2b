"""Dispatch: what one Celery publish costs, next to a raw Redis round trip.

In this process, against a redis-server of its own (no HTTP, no worker):

- ``lpush``: redis-py ``LPUSH`` of a payload as long as a Celery message, over
  the same kind of connection kombu uses (redis-py, TCP loopback): the floor.
- ``send_task, no sent-event``: ``Celery.send_task`` with the project's settings
  except ``task_send_sent_event`` (the event Flower uses to show queued tasks).
- ``send_task``: the project's settings, exactly what the Celery API calls.
- ``API schedule()``: the Celery API's whole hand-over: ledger write + send_task.

Where the time goes: the Redis commands each call sends (``INFO commandstats``
before and after), the client CPU per call, and a profile of ``send_task``'s
hottest functions. Messages go to a queue no worker reads (``dispatch-bench``),
which is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.common import say
from experiments.perf import base
from experiments.perf.dispatch_measure import TARGET_RATIO, measure, measure_amqp
from experiments.reporting.tables import markdown_table, targets_table
from harness.procs import REPO_ROOT
from harness.stacks import StackSpec, Where, open_stack

NAME = "dispatch"
VARIANTS = ["lpush", "send_task, no sent-event", "send_task", "API schedule()"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--calls", type=int, help="timed calls per variant (3000)")
    parser.add_argument("--redis-url", help="measure against this Redis instead of starting one")
    parser.add_argument(
        "--broker",
        choices=("redis", "both"),
        default="both",
        help="Redis only, or RabbitMQ as the broker too (local target; default both)",
    )


def _in_compose(where: Where, calls: int) -> dict[str, Any]:
    """Measure from inside the compose network (compose publishes no broker port):
    a one-off container of the stack's own image (``docker compose run``), with this
    checkout's code mounted read-only, printing its data as JSON.

    The image holds only what the services need; the measurement needs nothing
    more (Celery, kombu, redis-py, and ``experiments.stats``: standard library),
    so nothing is installed or copied into the running containers.
    """
    compose = where.attach().compose
    inner = ["python", "-m", "experiments.perf.dispatch_measure", "--calls", str(calls)]
    # Database 15 of the stack's Redis: the bench keys and events stay out of the
    # real queue and out of Flower (kombu prefixes fanout channels with the db).
    inner += ["--redis-url", "redis://redis:6379/15"]
    say("dispatch: measuring in a one-off container on the compose network")
    out = compose.run(
        "run", "--rm", "--no-deps", "-T",
        "-v", f"{REPO_ROOT}:/bench:ro", "-w", "/bench", "-e", "PYTHONPATH=/bench",
        "celery-api", *inner,
        timeout=600,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


@dataclass
class DispatchResult:
    message_bytes: int
    calls: int
    variants: dict[str, dict[str, float]]
    commands: dict[str, dict[str, float]]
    profile: list[dict[str, Any]]
    top_functions: list[dict[str, Any]]
    redis_clients_per_send_task: float
    redis_client_construction_us: float
    ratios: dict[str, dict[str, float]]
    targets: list[dict[str, Any]]
    target: str = ""
    # The same hand-over with RabbitMQ as the broker (None: not measured).
    rabbitmq: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return True


def measure_cli(args: argparse.Namespace, where: Where) -> DispatchResult:
    calls = args.calls or (300 if args.quick else 3000)
    if args.redis_url:
        data = measure(args.redis_url, calls)
        data["target"] = "given Redis"
    elif where.kind == "compose":
        data = _in_compose(where, calls)
        data["target"] = "compose (a one-off container on the stack's network)"
    else:
        with open_stack(where, StackSpec(("redis",)), label="dispatch") as stack:
            data = measure(stack.settings.redis_url, calls)
            data["target"] = stack.name
        if args.broker in ("rabbitmq", "both"):
            spec = StackSpec(("redis", "broker"), broker="rabbitmq")
            with open_stack(where, spec, label="dispatch-rabbitmq") as stack:
                say("dispatch: the same with RabbitMQ as the broker")
                s = stack.settings
                data["rabbitmq"] = measure_amqp(s.broker_url, s.redis_url, calls)
    return DispatchResult(**data)


def render(data: dict[str, Any]) -> str:
    rows = []
    for name, s in data["variants"].items():
        cmds = ", ".join(f"{k} {v:g}" for k, v in data["commands"][name].items())
        rows.append(
            [
                name,
                s["p50"],
                s["p95"],
                s["p99"],
                s["client_cpu_us"],
                data["ratios"][name]["p50"],
                cmds,
            ]
        )
    table = markdown_table(
        [
            "variant",
            "p50 µs",
            "p95 µs",
            "p99 µs",
            "client CPU µs",
            "p50 / LPUSH",
            "Redis commands per call",
        ],
        rows,
    )
    table += "\n\nWhere `send_task`'s own time goes (cProfile, grouped by package):\n\n"
    table += markdown_table(
        ["where", "share", "µs per call"],
        [[p["where"], f"{100 * p['share']:.0f} %", p["us_per_call"]] for p in data["profile"]],
    )
    table += "\n\nIts hottest functions (own time):\n\n" + markdown_table(
        ["function", "share", "calls per send_task"],
        [
            [f"`{t['function']}`", f"{100 * t['share']:.0f} %", t["calls_per_send"]]
            for t in data["top_functions"]
        ],
    )
    table += "\n\n" + targets_table(data["targets"])
    rabbit = data.get("rabbitmq")
    if rabbit:
        table += (
            "\n\nThe same hand-over with **RabbitMQ** as the broker (publisher confirms; the "
            "ledger stays in Redis), against a raw `basic_publish` of a persistent "
            f"{rabbit['message_bytes']}-byte message with confirms:\n\n"
        )
        table += markdown_table(
            ["variant", "p50 µs", "p95 µs", "p99 µs", "client CPU µs", "p50 / basic_publish"],
            [
                [
                    name,
                    v["p50"],
                    v["p95"],
                    v["p99"],
                    v["client_cpu_us"],
                    rabbit["ratios"][name]["p50"],
                ]
                for name, v in rabbit["variants"].items()
            ],
        )
        redis_send = data["variants"]["send_task"]["p50"]
        rabbit_send = rabbit["variants"]["send_task"]["p50"]
        table += (
            f"\n\n`send_task` p50: {redis_send:.0f} µs on Redis, {rabbit_send:.0f} µs on "
            f"RabbitMQ ({rabbit_send / redis_send:.2f}×)."
        )
    st = data["variants"]["send_task"]
    rtt = data["variants"]["lpush"]["p50"]
    notes = (
        f"{data['calls']} timed calls per variant (interleaved blocks of 100), a "
        f"{data['message_bytes']}-byte message. One LPUSH round trip: {rtt:.0f} µs at p50; "
        f"send_task makes {st['redis_commands']:g} Redis calls and spends "
        f"{st['client_cpu_us']:.0f} µs of CPU in this process per call: building the "
        "message (headers, JSON, uuid), kombu's routing, the task-sent event (a second "
        "message: compare the row without it), and "
        f"{data['redis_clients_per_send_task']:g} new redis.Redis client objects "
        f"(kombu makes one per command; {data['redis_client_construction_us']:.0f} µs "
        "each, measured alone). Load average at the start: "
        f"{data['conditions']['loadavg_1m']}."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax1, ax2) = charts.figure(1, 2, size=(12, 4.5))
    names = list(data["variants"])
    rtt = data["variants"]["lpush"]["p50"]
    wire = [
        min(data["variants"][n]["redis_commands"] * rtt, data["variants"][n]["p50"]) for n in names
    ]
    # kombu's client objects: one per Redis command it sends (not for the raw LPUSH).
    per = data["redis_client_construction_us"]
    build = [
        0.0
        if n == "lpush"
        else min(
            data["commands"][n].get("lpush", 0) + data["commands"][n].get("publish", 0),
            data["redis_clients_per_send_task"],
        )
        * per
        for n in names
    ]
    rest = [
        max(data["variants"][n]["p50"] - w - b, 0.0)
        for n, w, b in zip(names, wire, build, strict=True)
    ]
    ys = range(len(names))
    left2 = [w + b for w, b in zip(wire, build, strict=True)]
    ax1.barh(ys, wire, color="#9ecae1", label="Redis round trips (commands × LPUSH p50)")
    ax1.barh(ys, build, left=wire, color="#fdd0a2", label="new redis.Redis objects (kombu)")
    ax1.barh(ys, rest, left=left2, color="#fd8d3c", label="other Python in the caller")
    for y, n in zip(ys, names, strict=True):
        p50 = data["variants"][n]["p50"]
        ax1.annotate(
            f"{p50:.0f} µs ({data['ratios'][n]['p50']:.1f}×)",
            (p50, y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax1.axvline(rtt * TARGET_RATIO, color="#d62728", linestyle="--", linewidth=1)
    ax1.annotate(
        f"target {TARGET_RATIO:g}× LPUSH",
        (rtt * TARGET_RATIO, len(names) - 0.5),
        color="#d62728",
        fontsize=7,
    )
    ax1.set_yticks(list(ys), names)
    ax1.invert_yaxis()
    ax1.set_xlabel("p50 per call, µs")
    ax1.legend(fontsize=7, loc="upper right")
    ax1.set_title("one hand-over, where the time goes")
    prof = data["profile"]
    ax2.barh(range(len(prof)), [p["us_per_call"] for p in prof], color="#fd8d3c")
    ax2.set_yticks(range(len(prof)), [p["where"] for p in prof], fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("µs per send_task, cProfile own time (profiling inflates it)")
    ax2.set_title("send_task's own time by package")
    charts.save(fig, path, data)


EXPERIMENT = base.Experiment(NAME, measure_cli, render, chart)
run = EXPERIMENT.run
