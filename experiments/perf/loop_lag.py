"""Loop lag: how long the BackgroundTasks app's event loop is unavailable while a
background task runs, for each of the four ways to write the task (Starlette runs a ``def`` in
AnyIO's thread pool, an ``async def`` on the event loop).

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
from pathlib import Path
from typing import Any

import httpx

from experiments.common import say
from experiments.perf import base
from experiments.perf.load import LoadResult, ProbePool, open_loop
from experiments.reporting.tables import markdown_table, targets_table
from experiments.stats import percentile, ratio, summary
from harness.procs import Timeout, wait_until
from harness.stacks import StackSpec, Where, open_stack
from harness.target import Target
from shared.models import IN_FLIGHT

NAME = "loop-lag"
VARIANTS = ["sync-task", "async-task", "blocking-async-task", "to-thread-task"]
TARGET_MS = 5.0
LEAD_IN = 0.3  # probes before the task is scheduled


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--seconds", type=float, help="how long each task sleeps (1.0)")
    parser.add_argument("--every", type=float, default=5.0, help="probe interval, ms (5)")


async def _probe_run(target: Target, variant: str | None, seconds: float, every: float) -> Any:
    base = target.url("bg")
    # Enough connections for every probe that can pile up behind a block, all opened
    # beforehand (a probe must not pay for a new connection while it measures).
    pool = ProbePool(base, int(seconds / every) + 20)
    async with pool, httpx.AsyncClient(timeout=10) as control:
        await control.get(f"{base}/health")

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
            r = await control.post(f"{base}/mechanics/{variant}", params={"seconds": seconds})
            r.raise_for_status()
            task_id = r.json()["task_ids"][0]
            # relative to the probes' start (open_loop's t0 is ~LEAD_IN before t)
            scheduled_at = LEAD_IN + (loop.time() - t)
        result: LoadResult = await probes
    return result, task_id, scheduled_at


def _where(target: Target, task_id: str, seconds: float) -> dict[str, str]:
    """Where the task ran, as it recorded itself in the ledger (after it finished;
    nothing if it has not within ``seconds`` + 10)."""

    def finished() -> dict[str, Any] | None:
        r = httpx.get(f"{target.url('bg')}/tasks/{task_id}", timeout=5)
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
    idle_ms: dict[str, float]
    variants: dict[str, dict[str, Any]]
    targets: list[dict[str, Any]]
    target: str

    @property
    def ok(self) -> bool:
        return all(v["errors"] == 0 for v in self.variants.values())


def measure(args: argparse.Namespace, where: Where) -> LoopLagResult:
    seconds = args.seconds or (0.4 if args.quick else 1.0)
    every = args.every / 1000
    say(f"loop-lag: probes every {args.every:g} ms, tasks of {seconds:g} s")
    variants: dict[str, Any] = {}
    with open_stack(where, StackSpec.for_implementation("bg"), label="loop-lag") as target:
        # Warm-up: the first request to each endpoint (and the thread pool's first
        # thread) costs tens of ms once; that is not what this measures.
        for variant in VARIANTS:
            r = httpx.post(f"{target.url('bg')}/mechanics/{variant}", params={"seconds": 0})
            r.raise_for_status()
        idle, _, _ = asyncio.run(_probe_run(target, None, seconds, every))
        idle_lat = idle.latencies()
        baseline = percentile(idle_lat, 50)
        for variant in VARIANTS:
            say(f"  {variant}")
            result, task_id, scheduled_at = asyncio.run(_probe_run(target, variant, seconds, every))
            ran_on = _where(target, task_id, seconds) if task_id else {}
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
    return LoopLagResult(
        config={"seconds": seconds, "probe_every_ms": args.every, "lead_in_s": LEAD_IN},
        idle_ms={
            "p50": 1000 * baseline,
            "p99": 1000 * percentile(idle_lat, 99),
            "probes": len(idle_lat),
        },
        variants=variants,
        targets=_targets(variants, seconds),
        target=where.kind,
    )


def _targets(variants: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    targets = []
    for v, d in variants.items():
        if v == "blocking-async-task":
            measured = ratio(d["lag_ms"]["max"], seconds * 1000)
            targets.append(
                {
                    "target": f"{v}: max lag ≈ the block ({seconds:g} s)",
                    "measured": measured,
                    "met": 0.8 <= measured <= 1.5,
                }
            )
        else:
            targets.append(
                {
                    "target": f"{v}: lag p99 ≤ {TARGET_MS:g} ms",
                    "measured": d["lag_ms"]["p99"],
                    "met": d["lag_ms"]["p99"] <= TARGET_MS,
                }
            )
    return targets


def render(data: dict[str, Any]) -> str:
    rows = [
        [
            v,
            d["ran_on_loop_thread"],
            d["probes"],
            d["lag_ms"]["p50"],
            d["lag_ms"]["p99"],
            d["lag_ms"]["max"],
        ]
        for v, d in data["variants"].items()
    ]
    table = markdown_table(
        ["task", "ran on the loop's thread", "probes", "lag p50 ms", "lag p99 ms", "lag max ms"],
        rows,
    )
    table += "\n\n" + targets_table(data["targets"])
    cfg = data["config"]
    idle = data["idle_ms"]
    notes = (
        f"One task of {cfg['seconds']:g} s per row; a `GET /health` probe every "
        f"{cfg['probe_every_ms']:g} ms, sent on schedule whether or not earlier ones were "
        f"answered. Lag = response time − the idle median ({idle['p50']:.2f} ms; idle p99 "
        f"{idle['p99']:.2f} ms, {idle['probes']} probes). Probe client and server share "
        f"{data['conditions']['cpus']} CPUs; load average at the start: "
        f"{data['conditions']['loadavg_1m']}."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, axes = charts.figure(2, 2, size=(11, 6.5))
    seconds = data["config"]["seconds"]
    top = max((lat for d in data["variants"].values() for _, lat in d["timeline"]), default=10.0)
    for ax, (v, d) in zip(axes, data["variants"].items(), strict=False):
        xs = [s for s, _ in d["timeline"]]
        ys = [lat for _, lat in d["timeline"]]
        blocking = v == "blocking-async-task"
        ax.scatter(xs, ys, s=4, color="#d62728" if blocking else "#1f77b4")
        t0 = d["scheduled_at_s"]
        if t0 == t0:
            ax.axvspan(t0, t0 + seconds, color="#ffcc80", alpha=0.35, label="task runs")
        ax.set_yscale("log")
        ax.set_ylim(0.5, top * 2)
        ax.axhline(data["idle_ms"]["p50"] + 5, color="#555555", linestyle=":", linewidth=1)
        ax.set_title(
            f"{v}: lag p99 {d['lag_ms']['p99']:.1f} ms, max {d['lag_ms']['max']:.0f} ms",
            fontsize=9,
        )
        ax.set_xlabel("probe sent at, s")
        ax.set_ylabel("/health response, ms (log)")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"event-loop lag while one {seconds:g}-s background task runs "
        f"(probe every {data['config']['probe_every_ms']:g} ms; dotted: idle + 5 ms)",
        fontsize=10,
    )
    charts.save(fig, path, data)


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
