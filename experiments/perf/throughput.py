"""Throughput: N short tasks (``POST /items/``, one ``write_log`` each), from the
first request sent to the last task finished, as the ledger records it.

- ``bg``: BackgroundTasks, in the API process.
- ``celery reliable``: the project's settings (``acks_late``, prefetch multiplier 1).
- ``celery stock``: Celery's defaults for the two (ack on receipt, prefetch 4);
  the ratio of the two is the price of not losing a task when a worker dies.

Each runs on a fresh stack. The requests go through the API with a closed loop of
``--concurrency`` clients, so the end-to-end span of Celery is bounded below by
how fast the API publishes; a second Celery measurement, ``drain``, isolates the
worker: N tasks are queued while the worker is stopped, then it is started and
the span runs from the first task started to the last finished.

``write_log`` scans the log file under a lock to stay idempotent: O(lines) per
task, the same for both sides, and visible at this N (the file grows to N lines).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.common import say
from experiments.perf import base
from experiments.perf.load import submit, wait_finished
from experiments.reporting.tables import markdown_table, targets_table
from experiments.stats import ratio
from harness.stacks import StackSpec, Where, open_stack
from harness.target import Target

NAME = "throughput"
PHASES: dict[str, tuple[str, dict[str, Any]]] = {
    "bg": ("bg", {}),
    "celery reliable": ("celery", {}),
    "celery stock": ("celery", {"celery_acks_late": False, "celery_prefetch_multiplier": 4}),
}
TARGET_RATIO = 0.8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--tasks", type=int, help="tasks per measurement (1000)")
    parser.add_argument("--concurrency", type=int, help="concurrent HTTP clients (8)")
    parser.add_argument(
        "--worker-concurrency", type=int, default=2, help="Celery prefork processes (2)"
    )


async def _dispatch(base: str, n: int, concurrency: int, label: str) -> tuple[list[str], int]:
    return await submit(
        base,
        lambda i: "/items/",
        n=n,
        concurrency=concurrency,
        label=label,
        json_for=lambda i: {"name": f"item {i}", "price": i},
    )


def span(target: Target, side: str, n: int, concurrency: int, label: str) -> dict[str, Any]:
    """N `POST /items/` through the API (closed loop): first request to last task done."""
    t_first = time.time()
    task_ids, errors = asyncio.run(_dispatch(target.url(side), n, concurrency, label))
    t_sent = time.time()
    done = wait_finished(target, task_ids, timeout=60 + n * 0.2, label=label)
    starts = [d[1] for d in done.values()]
    ends = [d[2] for d in done.values()]
    last = max(ends) if ends else float("nan")
    return {
        "tasks": n,
        "finished": len(done),
        "failed": sum(1 for d in done.values() if d[0] != "succeeded"),
        "http_errors": errors,
        "dispatch_s": t_sent - t_first,
        "span_s": last - t_first,
        "worker_span_s": (last - min(starts)) if starts else float("nan"),
        "tasks_per_s": len(done) / (last - t_first) if ends else float("nan"),
    }


def _drain(stack: Target, n: int, concurrency: int, label: str) -> dict[str, Any]:
    """Queue N tasks with the worker stopped; start it; first start to last finish."""
    stack.terminate("worker", timeout=30)
    task_ids, errors = asyncio.run(_dispatch(stack.url("celery"), n, concurrency, label + " queue"))
    stack.start("worker", timeout=60)
    done = wait_finished(stack, task_ids, timeout=60 + n * 0.2, label=label + " drain")
    starts = [d[1] for d in done.values()]
    ends = [d[2] for d in done.values()]
    span = (max(ends) - min(starts)) if ends else float("nan")
    return {
        "tasks": n,
        "finished": len(done),
        "http_errors": errors,
        "span_s": span,
        "tasks_per_s": len(done) / span if ends else float("nan"),
    }


@dataclass
class ThroughputResult:
    config: dict[str, Any]
    results: dict[str, dict[str, Any]]
    drain: dict[str, dict[str, Any]]
    ratios: dict[str, float]
    targets: list[dict[str, Any]]
    target: str

    @property
    def ok(self) -> bool:
        runs = [*self.results.values(), *self.drain.values()]
        return all(r["finished"] == r["tasks"] for r in runs)


def measure(args: argparse.Namespace, where: Where) -> ThroughputResult:
    n = args.tasks or (60 if args.quick else 1000)
    concurrency = args.concurrency or (4 if args.quick else 8)
    results: dict[str, dict[str, Any]] = {}
    drains: dict[str, dict[str, Any]] = {}
    for phase, (side, settings) in PHASES.items():
        say(f"throughput: {phase}, {n} tasks, {concurrency} clients")
        # --worker-concurrency is Celery's pool; bg-api runs one process either way.
        processes = args.worker_concurrency if side == "celery" else None
        spec = StackSpec.for_implementation(side, processes=processes, settings=settings)
        with open_stack(where, spec, label=f"throughput-{side}") as target:
            results[phase] = span(target, side, n, concurrency, phase)
            if side == "celery":
                drains[phase] = _drain(target, n, concurrency, phase)
    data = _analyse(results, drains, n, concurrency, args.worker_concurrency)
    return ThroughputResult(**data, target=where.kind)


def _analyse(
    results: dict[str, dict[str, Any]],
    drains: dict[str, dict[str, Any]],
    n: int,
    concurrency: int,
    worker_concurrency: int,
) -> dict[str, Any]:
    ratios: dict[str, float] = {}
    targets = []
    if "celery reliable" in results and "celery stock" in results:
        # Throughput ratio: stock's span over reliable's (≥ 0.8 means ≤ 25 % slower).
        r = ratio(results["celery stock"]["span_s"], results["celery reliable"]["span_s"])
        ratios["reliable/stock throughput"] = r
        targets.append(
            {
                "target": f"celery reliable ≥ {TARGET_RATIO}× stock throughput",
                "measured": r,
                "met": r >= TARGET_RATIO,
            }
        )
    if "celery reliable" in drains and "celery stock" in drains:
        ratios["reliable/stock throughput, worker drain"] = ratio(
            drains["celery stock"]["span_s"], drains["celery reliable"]["span_s"]
        )
    if "bg" in results and "celery reliable" in results:
        ratios["celery reliable/bg throughput"] = ratio(
            results["bg"]["span_s"], results["celery reliable"]["span_s"]
        )
    return {
        "config": {
            "tasks": n,
            "http_concurrency": concurrency,
            "worker_concurrency": worker_concurrency,
            "worker_pool": "prefork",
        },
        "results": results,
        "drain": drains,
        "ratios": ratios,
        "targets": targets,
    }


def render(data: dict[str, Any]) -> str:
    rows = [
        [phase, r["finished"], r["dispatch_s"], r["span_s"], r["tasks_per_s"], r["worker_span_s"]]
        for phase, r in data["results"].items()
    ]
    table = markdown_table(
        [
            "side",
            "tasks done",
            "dispatch s",
            "first request → last done, s",
            "tasks/s",
            "first start → last done, s",
        ],
        rows,
    )
    if data["drain"]:
        table += "\n\nWorker alone (queued first, then the worker started):\n\n"
        table += markdown_table(
            ["side", "tasks done", "first start → last done, s", "tasks/s"],
            [[p, r["finished"], r["span_s"], r["tasks_per_s"]] for p, r in data["drain"].items()],
        )
    table += "\n\n" + markdown_table(
        ["ratio", "value"], [[k, v] for k, v in data["ratios"].items()]
    )
    if data["targets"]:
        table += "\n\n" + targets_table(data["targets"])
    cfg = data["config"]
    notes = (
        f"{cfg['tasks']} tasks per measurement, {cfg['http_concurrency']} HTTP clients "
        f"(closed loop), Celery worker: {cfg['worker_pool']} pool, concurrency "
        f"{cfg['worker_concurrency']}; 'stock' = CELERY_ACKS_LATE=false, "
        "CELERY_PREFETCH_MULTIPLIER=4 (Celery's defaults), everything else as the "
        "project sets it (events on). Client, API, Redis and worker share "
        f"{data['conditions']['cpus']} CPUs; load average at the start: "
        f"{data['conditions']['loadavg_1m']}."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax1, ax2) = charts.figure(1, 2, size=(11, 4.5))
    phases = list(data["results"])
    colors = {
        "bg": charts.COLORS["bg"],
        "celery reliable": charts.COLORS["reliable"],
        "celery stock": charts.COLORS["stock"],
    }
    charts.grouped_bars(
        ax1,
        phases,
        {"tasks/s": [data["results"][p]["tasks_per_s"] for p in phases]},
        ylabel="tasks per second (first request → last done)",
        fmt="{:.0f}",
        group_colors=[colors.get(p, "#777777") for p in phases],
    )
    ax1.set_title(f"{data['config']['tasks']} tasks through the API")
    drains = list(data["drain"])
    if drains:
        charts.grouped_bars(
            ax2,
            drains,
            {"tasks/s": [data["drain"][p]["tasks_per_s"] for p in drains]},
            ylabel="tasks per second (worker alone)",
            fmt="{:.0f}",
            group_colors=[colors.get(p, "#777777") for p in drains],
        )
        ax2.set_title(f"worker draining a queue (prefork ×{data['config']['worker_concurrency']})")
    else:
        ax2.set_axis_off()
    charts.save(fig, path, data)


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
