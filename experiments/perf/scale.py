"""More processes: I/O-bound notifications per second against the number of
processes each implementation runs its tasks with.

N notification requests (each schedules the slow notification, a sleep of
``--delay`` standing for a mail server, then a log line), sent by a closed loop of
``--concurrency`` clients; from the first request to the last notification done.
Each implementation declared in ``shared.services`` (``--implementations``), with
each count of ``--processes``, as ``StackSpec.for_implementation`` gives it.

What each unit of "process" gives, stated because it decides the result (the
report says it for each implementation, from its declared commands):

- where a worker runs the tasks, its concurrency: a prefork pool runs one task per
  process, so a sleeping notification holds a whole process; a worker whose
  concurrency is tasks at once in one process runs that many;
- where the API holds its tasks in process memory, each uvicorn worker process runs
  its sync tasks in AnyIO's thread pool, 40 at once by default; N processes, 40 N
  at once.

A prefork pool is not the only one a worker may run (threads or green threads run
I/O-bound work many at once per process); each implementation runs here as this
project sets it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from experiments.common import add_implementations_argument, say
from experiments.perf import base
from experiments.perf.load import submit, wait_finished
from experiments.perf.threadpool import DEFAULT_TOKENS
from experiments.reporting.scale import chart, render
from experiments.stats import ratio
from harness.stacks import StackSpec, Where, open_stack
from shared.services import IMPLEMENTATIONS, Delivery, Implementation, delivery_of

NAME = "scale"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    add_implementations_argument(parser, tuple(IMPLEMENTATIONS), "whose processes to add")
    parser.add_argument("--requests", type=int, help="notification requests per run (200)")
    parser.add_argument("--delay", type=float, default=0.2, help="NOTIFICATION_DELAY_SECONDS")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP clients (16)")
    parser.add_argument("--processes", type=int, nargs="+", help="process counts to try (1 2 4)")


def at_once(impl: Implementation, processes: int) -> int:
    """How many notifications it runs at once with so many processes."""
    if delivery_of(impl) == Delivery.in_process:
        return DEFAULT_TOKENS * processes
    return processes


@dataclass
class ScaleResult:
    config: dict[str, Any]
    runs: dict[str, dict[str, dict[str, Any]]]
    target: str

    @property
    def ok(self) -> bool:
        return all(r["done"] == r["requests"] for side in self.runs.values() for r in side.values())


def measure(args: argparse.Namespace, where: Where) -> ScaleResult:
    n = args.requests or (40 if args.quick else 200)
    counts = args.processes or ([1, 2] if args.quick else [1, 2, 4])
    selected: tuple[Implementation, ...] = args.implementations
    runs: dict[str, dict[str, dict[str, Any]]] = {impl.value: {} for impl in selected}
    for impl in selected:
        for p in counts:
            say(f"scale: {impl}, {p} process{'es' if p > 1 else ''}, {n} notifications")
            spec = StackSpec.for_implementation(
                impl, processes=p, settings={"notification_delay_seconds": args.delay}
            )
            with open_stack(where, spec, label="scale") as target:
                t0 = time.time()
                ids, errors = asyncio.run(
                    submit(
                        target.url(impl),
                        lambda i: f"/send-notification/s{i}@example.com",
                        n=n,
                        concurrency=args.concurrency,
                        label=f"{impl} ×{p}",
                    )
                )
                accepted_after = time.time() - t0
                notifications = ids[0::2]  # each request: the notification, then its log line
                cap = 60 + n * args.delay / p
                done = wait_finished(target, notifications, timeout=cap, label=f"{impl} ×{p}")
            ends = [d[2] for d in done.values()]
            span = (max(ends) - t0) if ends else math.nan
            runs[impl.value][str(p)] = {
                "processes": p,
                "at_once": at_once(impl, p),
                "requests": n,
                "done": len(done),
                "http_errors": errors,
                "accepted_after_s": accepted_after,
                "span_s": span,
                "per_s": len(done) / span if ends else math.nan,
                # The floor if nothing but the sleeps took time.
                "ideal_span_s": math.ceil(n / at_once(impl, p)) * args.delay,
            }
    for side_runs in runs.values():
        one = side_runs.get(str(counts[0]), {}).get("per_s", math.nan)
        for r in side_runs.values():
            r["speedup"] = ratio(r["per_s"], one)
    return ScaleResult(
        config={
            "requests": n,
            "delay": args.delay,
            "http_concurrency": args.concurrency,
            "processes": counts,
            "implementations": [i.value for i in selected],
        },
        runs=runs,
        target=where.kind,
    )


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
