"""Dispatch: what one publish to a broker costs the caller, next to the cheapest
write of a message as long as its own to the same broker.

For each implementation declared in ``shared.services`` that hands its tasks to a
broker (``Delivery.broker``) and whose package declares what to time (its
``dispatch_bench``: see ``experiments.perf.dispatch_measure``), selected with
``--implementations``. In this process, against a redis-server of its own (no
HTTP, no worker), each bench's variants: the floor (a raw write of the message's
bytes), the library's publish as it ships and as this project sets it up, and the
API's whole hand-over (the ledger's write, then the publish).

Where the time goes: the Redis commands each call sends (``INFO commandstats``
before and after), the client CPU per call, and a profile of the publish's hottest
functions. Messages go to a queue no worker reads, which is deleted afterwards.
With ``--broker both``, the implementations whose bench publishes to RabbitMQ too
are measured there as well.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from experiments.common import add_implementations_argument, say
from experiments.perf import base
from experiments.perf.dispatch_measure import measure, measure_amqp, on_amqp, publishers
from experiments.reporting.dispatch import chart, render
from harness.procs import REPO_ROOT
from harness.stacks import StackSpec, Where, open_stack
from harness.target import Unsupported
from shared.services import IMPLEMENTATIONS, Implementation

NAME = "dispatch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    add_implementations_argument(parser, publishers(), "whose broker publish to measure")
    parser.add_argument("--calls", type=int, help="timed calls per variant (3000)")
    parser.add_argument("--redis-url", help="measure against this Redis instead of starting one")
    parser.add_argument(
        "--broker",
        choices=("redis", "both"),
        default="both",
        help="Redis only, or RabbitMQ as the broker too (local target; default both)",
    )


def _in_compose(where: Where, impl: Implementation, calls: int) -> dict[str, Any]:
    """Measure from inside the compose network (compose publishes no broker port):
    a one-off container of the stack's own image (``docker compose run``) as the
    implementation's API service, with this checkout's code mounted read-only,
    printing its data as JSON.

    The image holds only what the services need; the measurement needs nothing
    more (the implementation's package, redis-py, and ``experiments.stats``:
    standard library), so nothing is installed or copied into the running containers.
    """
    compose = where.attach().compose
    inner = ["python", "-m", "experiments.perf.dispatch_measure", "--calls", str(calls)]
    # Database 15 of the stack's Redis: the bench keys and events stay out of the
    # real queues and out of Flower (kombu prefixes fanout channels with the db).
    inner += ["--redis-url", "redis://redis:6379/15", "--implementations", impl.value]
    say(f"dispatch: {impl.value}, measuring in a one-off container on the compose network")
    out = compose.run(
        "run", "--rm", "--no-deps", "-T",
        "-v", f"{REPO_ROOT}:/bench:ro", "-w", "/bench", "-e", "PYTHONPATH=/bench",
        IMPLEMENTATIONS[impl].api, *inner,
        timeout=600,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])["implementations"][impl.value]
    return data


@dataclass
class DispatchResult:
    calls: int
    # Per implementation (its value): its title, floor and profiled variant, and
    # what was measured (``dispatch_measure.measure``), with "rabbitmq" where it was.
    implementations: dict[str, dict[str, Any]]
    target: str = ""

    @property
    def ok(self) -> bool:
        return True


def measure_cli(args: argparse.Namespace, where: Where) -> DispatchResult:
    calls = args.calls or (300 if args.quick else 3000)
    benched = publishers()
    selected = [i for i in args.implementations if i in benched]
    for impl in args.implementations:
        if impl not in benched:
            say(f"dispatch: {IMPLEMENTATIONS[impl].title} declares no dispatch bench: skipped")
    if not selected:
        raise Unsupported("dispatch: none of the selected implementations declares a bench")
    found: dict[str, dict[str, Any]] = {}
    if args.redis_url:
        found = {i.value: measure(i, args.redis_url, calls) for i in selected}
        target = "given Redis"
    elif where.kind == "compose":
        found = {i.value: _in_compose(where, i, calls) for i in selected}
        target = "compose (a one-off container on the stack's network)"
    else:
        with open_stack(where, StackSpec(("redis",)), label=NAME) as stack:
            for impl in selected:
                say(f"dispatch: {IMPLEMENTATIONS[impl].title}")
                found[impl.value] = measure(impl, stack.settings.redis_url, calls)
            target = stack.name
        if args.broker == "both" and any(on_amqp(i) for i in selected):
            spec = StackSpec(("redis", "broker"), broker="rabbitmq")
            with open_stack(where, spec, label=f"{NAME}-rabbitmq") as stack:
                s = stack.settings
                for impl in filter(on_amqp, selected):
                    say(f"dispatch: {IMPLEMENTATIONS[impl].title} with RabbitMQ as the broker")
                    rabbit = measure_amqp(impl, s.broker_url, s.redis_url, calls)
                    if rabbit is not None:
                        found[impl.value]["rabbitmq"] = rabbit
    return DispatchResult(calls=calls, implementations=found, target=target)


EXPERIMENT = base.Experiment(NAME, measure_cli, render, chart)
run = EXPERIMENT.run
