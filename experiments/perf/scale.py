"""More processes: I/O-bound notifications per second against the number of Celery
worker processes and of BackgroundTasks API processes.

N notification requests (each schedules the slow notification, a sleep of
``--delay`` standing for a mail server, then a log line), sent by a closed loop of
``--concurrency`` clients; from the first request to the last notification done.

What each unit of "process" gives, stated because it decides the result:

- Celery, prefork pool: each pool process runs one task at a time, so a sleeping
  notification holds a whole process; ``--concurrency N`` runs N at once.
- BackgroundTasks: each uvicorn worker process runs its sync tasks in AnyIO's
  thread pool, 40 at once by default; N processes, 40 N at once.

Celery can run I/O-bound work with threads or green threads too (``--pool
threads|gevent``); prefork is its default and this project's setting.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.common import say
from experiments.perf import base
from experiments.perf.load import submit, wait_finished
from experiments.perf.threadpool import DEFAULT_TOKENS
from experiments.reporting.tables import markdown_table
from experiments.stats import ratio
from harness.stacks import StackSpec, Where, open_stack

NAME = "scale"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--requests", type=int, help="notification requests per run (200)")
    parser.add_argument("--delay", type=float, default=0.2, help="NOTIFICATION_DELAY_SECONDS")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP clients (16)")
    parser.add_argument("--processes", type=int, nargs="+", help="process counts to try (1 2 4)")


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
    runs: dict[str, dict[str, dict[str, Any]]] = {"celery": {}, "bg": {}}
    for side in ("celery", "bg"):
        for p in counts:
            say(f"scale: {side}, {p} process{'es' if p > 1 else ''}, {n} notifications")
            spec = StackSpec.for_implementation(
                side, processes=p, settings={"notification_delay_seconds": args.delay}
            )
            with open_stack(where, spec, label="scale") as target:
                t0 = time.time()
                ids, errors = asyncio.run(
                    submit(
                        target.url(side),
                        lambda i: f"/send-notification/s{i}@example.com",
                        n=n,
                        concurrency=args.concurrency,
                        label=f"{side} ×{p}",
                    )
                )
                accepted_after = time.time() - t0
                notifications = ids[0::2]  # each request: the notification, then its log line
                cap = 60 + n * args.delay / p
                done = wait_finished(target, notifications, timeout=cap, label=f"{side} ×{p}")
            ends = [d[2] for d in done.values()]
            span = (max(ends) - t0) if ends else math.nan
            at_once = p if side == "celery" else DEFAULT_TOKENS * p
            runs[side][str(p)] = {
                "processes": p,
                "at_once": at_once,
                "requests": n,
                "done": len(done),
                "http_errors": errors,
                "accepted_after_s": accepted_after,
                "span_s": span,
                "per_s": len(done) / span if ends else math.nan,
                # The floor if nothing but the sleeps took time.
                "ideal_span_s": math.ceil(n / at_once) * args.delay,
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
        },
        runs=runs,
        target=where.kind,
    )


def render(data: dict[str, Any]) -> str:
    label = {"celery": "Celery (prefork pool processes)", "bg": "BackgroundTasks (uvicorn workers)"}
    rows = [
        [
            label[side],
            r["processes"],
            r["at_once"],
            f"{r['done']}/{r['requests']}",
            r["accepted_after_s"],
            r["span_s"],
            r["per_s"],
            r["speedup"],
            r["ideal_span_s"],
        ]
        for side, by_count in data["runs"].items()
        for r in by_count.values()
    ]
    table = markdown_table(
        [
            "side",
            "processes",
            "notifications at once",
            "done",
            "all accepted after, s",
            "first request → last done, s",
            "notifications/s",
            "× one process",
            "floor (sleeps only), s",
        ],
        rows,
    )
    c = data["config"]
    notes = (
        f"{c['requests']} `POST /send-notification/...` per run, a notification being a "
        f"{c['delay']:g} s sleep (I/O-bound), sent by {c['http_concurrency']} clients in a "
        "closed loop; each run on a fresh stack. When *all accepted after* is close to the "
        "span, the API's intake (and this client, on the same CPUs) is the bound, not the "
        "processes that run the tasks. *at once*: Celery's prefork pool runs one "
        f"task per process; BackgroundTasks runs up to {DEFAULT_TOKENS} sync tasks per "
        "process in AnyIO's thread pool. The comparison is each side with its defaults; "
        "Celery's `--pool threads` or `gevent` would run I/O-bound tasks many at once per "
        f"process. {data['conditions']['cpus']} CPUs for everything."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax,) = charts.figure(1, 1, size=(8, 4.5))
    for side, color, name in (
        ("celery", charts.COLORS["celery"], "Celery (prefork processes)"),
        ("bg", charts.COLORS["bg"], "BackgroundTasks (uvicorn workers)"),
    ):
        runs = data["runs"][side]
        xs = [r["processes"] for r in runs.values()]
        ys = [r["per_s"] for r in runs.values()]
        ax.plot(xs, ys, marker="o", color=color, label=name)
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:.0f}", (x, y), xytext=(3, 3), textcoords="offset points", fontsize=8)
    ax.set_xlabel("processes")
    ax.set_xticks(data["config"]["processes"])
    ax.set_ylabel("notifications done per second (log)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"I/O-bound notifications ({data['config']['delay']:g} s each) vs processes")
    charts.save(fig, path, data)


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
