"""Heavy work: what CPU-bound tasks do to the API that scheduled them.

Chapter 19 says CPU-heavy work belongs in a separate worker such as Celery. Here it
gets a number: heavy jobs (``POST /heavy``: pure-Python arithmetic, sized to
``--task-ms`` on this machine) are scheduled at a steady rate while a probe
(``GET /health``, ``async def``, a few hundred bytes) measures how long the same
API takes to answer, against the same probe with nothing running.

- BackgroundTasks, ``def`` form: the job runs in a thread of the API process and
  holds the GIL; the probe competes with it for the interpreter.
- BackgroundTasks, ``async def`` form (``POST /heavy/async``): the job runs on the
  event loop; the probe waits for it to end.
- Celery: the job runs in a worker process; the API only publishes.

Then the same with more processes: BackgroundTasks with 2 uvicorn workers, Celery
with worker concurrency 2. The machine has few cores (2 here), shared by the
API, the worker, Redis and this load client: the numbers say what each side does
on such a machine, not on a big one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.common import say
from experiments.perf import base
from experiments.perf.load import ProbePool, open_loop, wait_finished
from experiments.reporting.tables import markdown_table
from experiments.stats import ratio, summary
from harness.stacks import StackSpec, Where, open_stack
from shared.work import compute

NAME = "heavy"
# key -> (label, side, path, processes: uvicorn workers for bg, pool processes for Celery)
CONFIGS: dict[str, tuple[str, str, str, int]] = {
    "bg-def": ("BackgroundTasks, def", "bg", "/heavy", 1),
    "bg-async": ("BackgroundTasks, async def", "bg", "/heavy/async", 1),
    "celery": ("Celery", "celery", "/heavy", 1),
    "bg-def-2": ("BackgroundTasks, def, 2 processes", "bg", "/heavy", 2),
    "bg-async-2": ("BackgroundTasks, async def, 2 processes", "bg", "/heavy/async", 2),
    "celery-2": ("Celery, 2 processes", "celery", "/heavy", 2),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--task-ms", type=float, default=50.0, help="one heavy job, ms (50)")
    parser.add_argument(
        "--load",
        type=float,
        default=1.0,
        help="offered load, in cores' worth of heavy jobs per second (1.0)",
    )
    parser.add_argument("--seconds", type=float, help="how long the load runs (8)")
    parser.add_argument("--every", type=float, default=10.0, help="probe interval, ms (10)")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="which, comma-separated (default all)"
    )


def rounds_for(ms: float) -> int:
    """The rounds that take ``ms`` here (the best of a few tries: noise only adds time)."""
    sample = 200_000
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        compute(sample)
        best = min(best, time.perf_counter() - t)
    return max(1, int(sample * ms / 1000 / best))


async def _run(base_url: str, path: str, rate: float, seconds: float, every: float) -> Any:
    """Heavy jobs at ``rate`` per second and probes every ``every`` s, for ``seconds``."""
    # New connections for every request: with several uvicorn workers, each one then
    # lands on whichever process accepts it, as behind a load balancer.
    async with (
        ProbePool(base_url, 0, reuse=False) as probes,
        ProbePool(base_url, 0, reuse=False) as sender,
    ):
        idle = await open_loop(
            lambda i: probes.request("GET", "/health"), every=every, duration=2.0
        )
        ids: list[str] = []
        errors = 0

        async def send(i: int) -> int:
            nonlocal errors
            status, body = await sender.fetch("POST", path)
            if status == 202:
                ids.extend(json.loads(body)["task_ids"])
            else:
                errors += 1
            return status

        t0 = time.time()
        loaded, _ = await asyncio.gather(
            open_loop(lambda i: probes.request("GET", "/health"), every=every, duration=seconds),
            open_loop(send, every=1 / rate, duration=seconds, timeout=seconds + 120),
        )
    return idle, loaded, ids, errors, t0


@dataclass
class HeavyResult:
    config: dict[str, Any]
    runs: dict[str, dict[str, Any]]
    target: str

    @property
    def ok(self) -> bool:
        return all(r["done"] == r["scheduled"] and r["errors"] == 0 for r in self.runs.values())


def measure(args: argparse.Namespace, where: Where) -> HeavyResult:
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    every = args.every / 1000
    rounds = rounds_for(args.task_ms)
    rate = args.load * 1000 / args.task_ms  # jobs per second: `load` cores' worth
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"heavy: unknown configs {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    say(
        f"heavy: {rounds:,} rounds ≈ {args.task_ms:g} ms here; {rate:.1f} jobs/s "
        f"({args.load:g} core's worth) for {seconds:g} s per run; probes every {args.every:g} ms"
    )
    runs: dict[str, dict[str, Any]] = {}
    for name in names:
        label, side, path, processes = CONFIGS[name]
        say(f"  {label}")
        spec = StackSpec.for_implementation(
            side, processes=processes, settings={"heavy_task_rounds": rounds}
        )
        with open_stack(where, spec, label="heavy") as target:
            idle, loaded, ids, errors, t0 = asyncio.run(
                _run(target.url(side), path, rate, seconds, every)
            )
            done = wait_finished(
                target, ids, timeout=60 + len(ids) * args.task_ms / 100, label=name
            )
        ends = [d[2] for d in done.values()]
        runs[name] = {
            "label": label,
            "side": side,
            "path": path,
            "processes": processes,
            "idle_ms": summary(idle.latencies(), keys=("p50", "p99")),
            "load_ms": summary(loaded.latencies(), keys=("p50", "p99", "max")),
            "probe_errors": idle.errors + loaded.errors,
            "scheduled": len(ids),
            "errors": errors,
            "done": len(done),
            "jobs_per_s": len(done) / (max(ends) - t0) if ends else math.nan,
        }
        r = runs[name]
        r["p50_ratio"] = ratio(r["load_ms"]["p50"], r["idle_ms"]["p50"])
        r["p99_ratio"] = ratio(r["load_ms"]["p99"], r["idle_ms"]["p99"])
    return HeavyResult(
        config={
            "task_ms": args.task_ms,
            "rounds": rounds,
            "rate_per_s": rate,
            "load_cores": args.load,
            "seconds": seconds,
            "probe_every_ms": args.every,
        },
        runs=runs,
        target=where.kind,
    )


def render(data: dict[str, Any]) -> str:
    rows = [
        [
            r["label"],
            r["idle_ms"]["p50"],
            r["load_ms"]["p50"],
            r["p50_ratio"],
            r["idle_ms"]["p99"],
            r["load_ms"]["p99"],
            r["p99_ratio"],
            f"{r['done']}/{r['scheduled']}",
            r["jobs_per_s"],
        ]
        for name, r in data["runs"].items()
    ]
    table = markdown_table(
        [
            "side, form, processes",
            "probe p50 idle ms",
            "p50 under load ms",
            "p50 ×",
            "probe p99 idle ms",
            "p99 under load ms",
            "p99 ×",
            "heavy jobs done",
            "jobs/s",
        ],
        rows,
    )
    c = data["config"]
    notes = (
        f"Heavy jobs of {c['rounds']:,} rounds (≈ {c['task_ms']:g} ms of pure Python here) sent at "
        f"{c['rate_per_s']:.1f} per second ({c['load_cores']:g} core's worth) for "
        f"{c['seconds']:g} s, while `GET /health` probes the same API every "
        f"{c['probe_every_ms']:g} ms (sent on schedule, answered or not, each on a new "
        "connection, so that with several processes each lands where the kernel puts it). "
        "*×*: under load "
        "over idle, the same probe on the same stack. *jobs/s*: jobs done from the first "
        "scheduled to the last finished. Processes: uvicorn workers (BackgroundTasks) or "
        "Celery pool processes. Every process, Redis and this load client share "
        f"{data['conditions']['cpus']} CPUs."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax1, ax2) = charts.figure(1, 2, size=(13, 4.8))
    names = list(data["runs"])
    runs = data["runs"]
    short = [
        runs[n]["label"].replace("BackgroundTasks", "BG").replace(", 2 processes", "\n×2")
        for n in names
    ]
    charts.grouped_bars(
        ax1,
        short,
        {
            "idle p99": [runs[n]["idle_ms"]["p99"] for n in names],
            "under load p50": [runs[n]["load_ms"]["p50"] for n in names],
            "under load p99": [runs[n]["load_ms"]["p99"] for n in names],
        },
        ylabel="GET /health, ms (log)",
        colors={"idle p99": "#bdbdbd", "under load p50": "#fdae6b", "under load p99": "#e6550d"},
        log=True,
        fmt="{:.0f}",
    )
    ax1.tick_params(axis="x", labelsize=7)
    ax1.set_title("the API's answer while it schedules heavy jobs")
    charts.grouped_bars(
        ax2,
        short,
        {"jobs/s": [runs[n]["jobs_per_s"] for n in names]},
        ylabel="heavy jobs done per second",
        fmt="{:.1f}",
        group_colors=[charts.COLORS[runs[n]["side"]] for n in names],
    )
    ax2.tick_params(axis="x", labelsize=7)
    ax2.set_title("throughput of the heavy jobs")
    charts.save(fig, path, data)


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
