"""Loop lag: how long an API's event loop is unavailable while a background task
it holds in its own process runs, for each of the four ways to write the task
(Starlette runs a ``def`` in AnyIO's thread pool, an ``async def`` on the event loop).

It measures every implementation declared in ``shared.services`` whose tasks are
held in its API's process (``Delivery.in_process``) and whose API serves the
mechanics routes (``POST /mechanics/<variant>``): a task handed to a broker runs in
another process, and cannot stall the API's loop.

A probe (``GET /health``, an ``async def`` endpoint that runs on the loop) is sent
every ``--every`` ms on a fixed schedule, answered or not, for the whole run; one
``/mechanics/<variant>?seconds=S`` task is scheduled a moment after the probes
start. A probe's lag is its response time minus the median response time of the
probes sent while nothing ran (the idle baseline, measured first). Blocking the
loop for S seconds shows as probes piling up: the one sent as the block began
waits S, the ones after it less.

- ``sync-task`` (a ``def``: AnyIO's thread pool), ``async-task`` (``await
  asyncio.sleep``), ``to-thread-task`` (``await asyncio.to_thread(time.sleep)``):
  the loop stays free.
- ``blocking-async-task`` (``time.sleep`` inside ``async def``): the loop is
  blocked for S; every request to the server waits.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from dataclasses import dataclass
from typing import Any

import httpx

from experiments.common import say
from experiments.perf import base
from experiments.perf.load import LoadResult, ProbePool, open_loop, openapi
from experiments.reporting.loop_lag import BLOCKING, chart, render
from experiments.stats import percentile, ratio, summary
from harness.procs import Timeout, wait_until
from harness.stacks import StackSpec, Where, open_stack
from harness.target import Unsupported
from shared.models import IN_FLIGHT
from shared.services import IMPLEMENTATIONS, Delivery, Implementation

NAME = "loop-lag"
VARIANTS = ["sync-task", "async-task", BLOCKING, "to-thread-task"]
MECHANICS = "/mechanics/{}"
TARGET_MS = 5.0
LEAD_IN = 0.3  # probes before the task is scheduled


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--seconds", type=float, help="how long each task sleeps (1.0)")
    parser.add_argument("--every", type=float, default=5.0, help="probe interval, ms (5)")


def held_in_process() -> tuple[Implementation, ...]:
    """The declared implementations whose tasks run in their API's own process."""
    return tuple(i for i, s in IMPLEMENTATIONS.items() if s.delivery == Delivery.in_process)


def serves_mechanics(document: dict[str, Any]) -> bool:
    """Does the API (its OpenAPI document) serve every variant's mechanics route?"""
    return all(MECHANICS.format(v) in document.get("paths", {}) for v in VARIANTS)


async def _probe_run(
    base_url: str, variant: str | None, seconds: float, every: float
) -> tuple[LoadResult, str | None, float]:
    # Enough connections for every probe that can pile up behind a block, all opened
    # beforehand (a probe must not pay for a new connection while it measures).
    pool = ProbePool(base_url, int(seconds / every) + 20)
    async with pool, httpx.AsyncClient(timeout=10) as control:
        await control.get(f"{base_url}/health")

        async def probe(i: int) -> int:
            return await pool.request("GET", "/health")

        probes = asyncio.create_task(
            open_loop(probe, every=every, duration=LEAD_IN + seconds + 0.5)
        )
        task_id = None
        scheduled_at = math.nan
        if variant is not None:
            await asyncio.sleep(LEAD_IN)
            loop = asyncio.get_running_loop()
            t = loop.time()
            r = await control.post(
                base_url + MECHANICS.format(variant), params={"seconds": seconds}
            )
            r.raise_for_status()
            task_id = r.json()["task_ids"][0]
            # relative to the probes' start (open_loop's t0 is ~LEAD_IN before t)
            scheduled_at = LEAD_IN + (loop.time() - t)
        result: LoadResult = await probes
    return result, task_id, scheduled_at


def _where(base_url: str, task_id: str, seconds: float) -> dict[str, str]:
    """Where the task ran, as it recorded itself in the ledger (after it finished;
    nothing if it has not within ``seconds`` + 10)."""

    def finished() -> dict[str, Any] | None:
        r = httpx.get(f"{base_url}/tasks/{task_id}", timeout=5)
        record: dict[str, Any] = r.json() if r.status_code == 200 else {}
        return record if record and record["state"] not in IN_FLIGHT else None

    try:
        record = wait_until(finished, seconds + 10, f"task {task_id} to finish", interval=0.1)
    except Timeout:
        return {}
    detail: dict[str, str] = record.get("detail", {})
    return detail


@dataclass
class LoopLagResult:
    config: dict[str, Any]
    # Per implementation (its value): title, idle_ms (the baseline), variants.
    implementations: dict[str, dict[str, Any]]
    targets: list[dict[str, Any]]
    target: str

    @property
    def ok(self) -> bool:
        return all(
            v["errors"] == 0
            for entry in self.implementations.values()
            for v in entry["variants"].values()
        )


def _measure_one(base_url: str, seconds: float, every: float) -> dict[str, Any]:
    """One API's idle baseline and every variant's lag."""
    # Warm-up: the first request to each endpoint (and the thread pool's first
    # thread) costs tens of ms once; that is not what this measures.
    for variant in VARIANTS:
        r = httpx.post(base_url + MECHANICS.format(variant), params={"seconds": 0})
        r.raise_for_status()
    idle, _, _ = asyncio.run(_probe_run(base_url, None, seconds, every))
    idle_lat = idle.latencies()
    baseline = percentile(idle_lat, 50)
    variants: dict[str, Any] = {}
    for variant in VARIANTS:
        say(f"  {variant}")
        result, task_id, scheduled_at = asyncio.run(_probe_run(base_url, variant, seconds, every))
        ran_on = _where(base_url, task_id, seconds) if task_id else {}
        lags = [max(0.0, lat - baseline) for lat in result.latencies()]
        variants[variant] = {
            "probes": len(result.samples),
            "errors": result.errors,
            "scheduled_at_s": scheduled_at,
            "lag_ms": summary(lags, keys=("p50", "p99", "max")),
            "ran_on_loop_thread": ran_on.get("on_loop_thread"),
            "thread": ran_on.get("thread"),
            # (sent, latency) of every probe, for the chart
            "timeline": [
                [round(s.sent, 4), round(1000 * s.latency, 3)]
                for s in result.samples
                if 200 <= s.status < 300
            ],
        }
    return {
        "idle_ms": {
            "p50": 1000 * baseline,
            "p99": 1000 * percentile(idle_lat, 99),
            "probes": len(idle_lat),
        },
        "variants": variants,
    }


def measure(args: argparse.Namespace, where: Where) -> LoopLagResult:
    seconds = args.seconds or (0.4 if args.quick else 1.0)
    every = args.every / 1000
    say(f"loop-lag: probes every {args.every:g} ms, tasks of {seconds:g} s")
    measured: dict[str, dict[str, Any]] = {}
    for impl in held_in_process():
        spec = IMPLEMENTATIONS[impl]
        with open_stack(where, StackSpec.for_implementation(impl), label=NAME) as target:
            base_url = target.url(impl)
            if not serves_mechanics(openapi(base_url)):
                say(f"loop-lag: {spec.title} serves no mechanics routes: not measured")
                continue
            say(f"loop-lag: {spec.title}")
            measured[impl.value] = {"title": spec.title, **_measure_one(base_url, seconds, every)}
    if not measured:
        raise Unsupported("loop-lag: no implementation held in process serves the mechanics")
    targets = [
        t
        for entry in measured.values()
        for t in _targets(entry["variants"], seconds, entry["title"] if len(measured) > 1 else None)
    ]
    return LoopLagResult(
        config={"seconds": seconds, "probe_every_ms": args.every, "lead_in_s": LEAD_IN},
        implementations=measured,
        targets=targets,
        target=where.kind,
    )


def _targets(
    variants: dict[str, Any], seconds: float, title: str | None = None
) -> list[dict[str, Any]]:
    """Each variant's target; ``title`` names the implementation where there are several."""
    who = f"{title}, " if title else ""
    targets = []
    for v, d in variants.items():
        if v == BLOCKING:
            measured = ratio(d["lag_ms"]["max"], seconds * 1000)
            targets.append(
                {
                    "target": f"{who}{v}: max lag ≈ the block ({seconds:g} s)",
                    "measured": measured,
                    "met": 0.8 <= measured <= 1.5,
                }
            )
        else:
            targets.append(
                {
                    "target": f"{who}{v}: lag p99 ≤ {TARGET_MS:g} ms",
                    "measured": d["lag_ms"]["p99"],
                    "met": d["lag_ms"]["p99"] <= TARGET_MS,
                }
            )
    return targets


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
