"""Heavy work: what CPU-bound tasks do to the API that scheduled them.

Chapter 19 says CPU-heavy work belongs in a separate worker such as Celery. Here it
gets a number: heavy jobs (``POST /heavy``: pure-Python arithmetic, sized to
``--task-ms`` on this machine) are scheduled at a steady rate while a probe
(``GET /health``, ``async def``, a few hundred bytes) measures how long the same
API takes to answer, against the same probe with nothing running.

Each implementation declared in ``shared.services`` (``--implementations``) runs its
``/heavy`` route: where it holds its tasks in process memory, the job runs in a
thread of the API process (a ``def`` task) and holds the GIL, the probe competing
with it for the interpreter; where a worker runs its tasks, the API only hands the
job over. An implementation whose package's experiment routes also serve
``/heavy/async`` (the same job as an ``async def`` task, on the event loop: the
probe waits for it to end) runs both, its configurations named ``-def`` and
``-async``.

Then the same with more processes (``--processes``): what
``StackSpec.for_implementation`` gives them to, uvicorn workers or a worker's
concurrency. The machine has few cores (2 here), shared by the API, the worker,
Redis and this load client: the numbers say what each implementation does on such
a machine, not on a big one.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from experiments.common import add_implementations_argument, say
from experiments.perf import base
from experiments.perf.load import ProbePool, open_loop, wait_finished
from experiments.reporting.heavy import chart, render
from experiments.stats import ratio, summary
from harness.stacks import StackSpec, Where, open_stack
from shared.services import IMPLEMENTATIONS, Implementation
from shared.work import compute

NAME = "heavy"
HEAVY = "/heavy"
HEAVY_ASYNC = "/heavy/async"
# Each route's form, where an implementation serves more than one (its key's suffix).
FORMS = {HEAVY: ("def", "def"), HEAVY_ASYNC: ("async", "async def")}


def serves(impl: Implementation, path: str) -> bool:
    """Do its package's experiment routes declare ``POST path``?"""
    module_name = f"{IMPLEMENTATIONS[impl].package}.experiment_routes"
    if importlib.util.find_spec(module_name) is None:
        return False
    router = getattr(importlib.import_module(module_name), "router", None)
    routes = getattr(router, "routes", [])
    return any(
        getattr(r, "path", None) == path and "POST" in (getattr(r, "methods", None) or ())
        for r in routes
    )


def routes_of(impl: Implementation) -> list[str]:
    """Its heavy routes: ``/heavy``, and ``/heavy/async`` where it serves that too."""
    return [HEAVY, *([HEAVY_ASYNC] if serves(impl, HEAVY_ASYNC) else [])]


@dataclass(frozen=True)
class Config:
    """One run: an implementation's heavy route, with so many processes."""

    implementation: Implementation
    path: str
    processes: int
    several_forms: bool  # does the implementation serve more than one heavy route?

    @property
    def key(self) -> str:
        key = self.implementation.value
        if self.several_forms:
            key += f"-{FORMS[self.path][0]}"
        return key + (f"-{self.processes}" if self.processes > 1 else "")

    @property
    def label(self) -> str:
        label = IMPLEMENTATIONS[self.implementation].title
        if self.several_forms:
            label += f", {FORMS[self.path][1]}"
        if self.processes > 1:
            label += f", {self.processes} {self.unit}"
        return label

    @property
    def unit(self) -> str:
        return "processes" if base.counts_processes(self.implementation) else "at once"


def configs_for(selected: Sequence[Implementation], counts: Sequence[int]) -> list[Config]:
    """Every selected implementation's heavy routes, with each count of processes: the
    counts in turn, the implementations in the order given within each."""
    routes = {impl: routes_of(impl) for impl in selected}
    return [
        Config(impl, path, p, len(routes[impl]) > 1)
        for p in counts
        for impl in selected
        for path in routes[impl]
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    add_implementations_argument(parser, tuple(IMPLEMENTATIONS), "whose APIs to load")
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
        "--processes",
        type=int,
        nargs="+",
        default=[1, 2],
        help="uvicorn workers, or a worker's concurrency, to try (1 2)",
    )
    parser.add_argument(
        "--configs",
        help="which configurations, comma-separated: <implementation>[-def|-async][-<processes>] "
        "(default all)",
    )


def pick(configs: Sequence[Config], names: str | None) -> list[Config]:
    """The configurations named (all when None), in the plan's order."""
    if names is None:
        return list(configs)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {c.key: c for c in configs}
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise SystemExit(f"heavy: unknown configs {unknown}; known: {', '.join(known)}")
    return [c for c in configs if c.key in wanted]


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
    configs = pick(configs_for(args.implementations, args.processes), args.configs)
    rounds = rounds_for(args.task_ms)
    rate = args.load * 1000 / args.task_ms  # jobs per second: `load` cores' worth
    say(
        f"heavy: {rounds:,} rounds ≈ {args.task_ms:g} ms here; {rate:.1f} jobs/s "
        f"({args.load:g} core's worth) for {seconds:g} s per run; probes every {args.every:g} ms"
    )
    runs: dict[str, dict[str, Any]] = {}
    for config in configs:
        impl, path, processes = config.implementation, config.path, config.processes
        say(f"  {config.label}")
        spec = StackSpec.for_implementation(
            impl, processes=processes, settings={"heavy_task_rounds": rounds}
        )
        with open_stack(where, spec, label="heavy") as target:
            idle, loaded, ids, errors, t0 = asyncio.run(
                _run(target.url(impl), path, rate, seconds, every)
            )
            done = wait_finished(
                target, ids, timeout=60 + len(ids) * args.task_ms / 100, label=config.key
            )
        ends = [d[2] for d in done.values()]
        runs[config.key] = {
            "label": config.label,
            "side": impl.value,
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
        r = runs[config.key]
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
            "implementations": [i.value for i in args.implementations],
            "processes": list(args.processes),
        },
        runs=runs,
        target=where.kind,
    )


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
