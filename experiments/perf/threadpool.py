"""Thread pool: sync background tasks share AnyIO's thread limiter (40 tokens by
default) with sync endpoints and sync dependencies.

K > 40 slow sync tasks (``/mechanics/sync-task?seconds=S``) are scheduled at once.
While the first 40 sleep, every token is taken: a sync endpoint (``GET /tasks``,
a ``def`` endpoint: FastAPI runs it in the same pool) waits for one, up to S; an ``async def``
endpoint (``/health``) does not notice. Two remedies, same load:

- ``async tasks``: the work as ``async def`` (``/mechanics/async-task``): no token held.
- ``THREADPOOL_TOKENS``: a bigger limiter (K + 40), set in the app's lifespan.

Probes: both endpoints, every ``--every`` ms on a fixed schedule, during the first
S seconds after the tasks were fired (raw keep-alive client, see ``load.ProbePool``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from experiments.common import say
from experiments.perf import base
from experiments.perf.load import ProbePool, open_loop, wait_finished
from experiments.reporting.tables import markdown_table
from experiments.stats import ratio, summary
from harness.stacks import StackSpec, Where, open_stack
from harness.target import Target

NAME = "threadpool"
# A sync endpoint that schedules nothing: an empty page of the ledger.
SYNC_PATH = "/tasks?since=99999999999&limit=1"
ASYNC_PATH = "/health"
# AnyIO's default thread limiter (per process): what sync tasks and sync endpoints share.
DEFAULT_TOKENS = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--tasks", type=int, help="slow tasks fired at once (60; > 40)")
    parser.add_argument("--seconds", type=float, help="how long each task sleeps (2.0)")
    parser.add_argument("--every", type=float, default=20.0, help="probe interval, ms (20)")


async def _scenario(
    target: Target, variant: str | None, k: int, seconds: float, every: float
) -> dict[str, Any]:
    base = target.url("bg")
    window = seconds * 0.9
    pool_size = int(window / every) + 10
    async with (
        ProbePool(base, max(k, 1)) as fire,
        ProbePool(base, pool_size) as sync_pool,
        ProbePool(base, pool_size) as async_pool,
    ):

        async def sync_probe(i: int) -> int:
            return await sync_pool.request("GET", SYNC_PATH)

        async def async_probe(i: int) -> int:
            return await async_pool.request("GET", ASYNC_PATH)

        async def fire_one(i: int) -> tuple[float, int, bytes]:
            t = time.perf_counter()
            status, body = await fire.fetch("POST", f"/mechanics/{variant}?seconds={seconds:g}")
            return time.perf_counter() - t, status, body

        t0 = time.time()
        fired: list[tuple[float, int, bytes]] = []
        firing = asyncio.gather(*(fire_one(i) for i in range(k))) if variant else asyncio.sleep(0)
        # The tasks are fired and the probes start at the same moment.
        results = await asyncio.gather(
            firing,
            open_loop(sync_probe, every=every, duration=window, timeout=seconds * 3 + 30),
            open_loop(async_probe, every=every, duration=window, timeout=seconds * 3 + 30),
        )
        fired = results[0] or []
        sync_res, async_res = results[1], results[2]
    task_ids = [json.loads(body)["task_ids"][0] for _, status, body in fired if status == 202]
    done = wait_finished(target, task_ids, timeout=seconds * (k / 10 + 3) + 30, label="tasks")
    ends = [d[2] for d in done.values()]
    return {
        "tasks": k if variant else 0,
        "scheduled": len(task_ids),
        "finished": len(done),
        "tasks_span_s": (max(ends) - t0) if ends else float("nan"),
        "schedule_ms": summary([lat for lat, _, _ in fired]),
        "sync_endpoint_ms": summary(sync_res.latencies()),
        "async_endpoint_ms": summary(async_res.latencies()),
        "probe_errors": sync_res.errors + async_res.errors,
        "sync_timeline": [
            [round(s.sent, 4), round(1000 * s.latency, 2)]
            for s in sync_res.samples
            if 200 <= s.status < 300
        ],
    }


def _warm_up(target: Target) -> None:
    """The first request to each endpoint, and the pool's first threads, cost tens of
    ms once: not what this measures."""
    base = target.url("bg")
    with httpx.Client(timeout=10) as client:
        for variant in ("sync-task", "async-task"):
            client.post(f"{base}/mechanics/{variant}", params={"seconds": 0}).raise_for_status()
        for _ in range(20):
            client.get(base + SYNC_PATH).raise_for_status()
            client.get(base + ASYNC_PATH).raise_for_status()


@dataclass
class ThreadpoolResult:
    config: dict[str, Any]
    scenarios: dict[str, dict[str, Any]]
    ratios: dict[str, dict[str, float]]
    target: str

    @property
    def ok(self) -> bool:
        return all(
            s["finished"] == s["tasks"] and s["probe_errors"] == 0 for s in self.scenarios.values()
        )


def measure(args: argparse.Namespace, where: Where) -> ThreadpoolResult:
    k = args.tasks or (48 if args.quick else 60)
    seconds = args.seconds or (0.6 if args.quick else 2.0)
    every = args.every / 1000
    tokens = k + DEFAULT_TOKENS
    scenarios: dict[str, dict[str, Any]] = {}
    say(f"threadpool: {k} tasks of {seconds:g} s, probes every {args.every:g} ms")
    plan: list[tuple[str, str | None, int | None]] = [
        ("idle", None, None),
        (f"{k} sync tasks", "sync-task", None),
        (f"{k} async tasks", "async-task", None),
        (f"{k} sync tasks, THREADPOOL_TOKENS={tokens}", "sync-task", tokens),
    ]
    # Two stacks: AnyIO's default limiter, then the raised one.
    for limit in (None, tokens):
        spec = StackSpec.for_implementation("bg", settings={"threadpool_tokens": limit})
        with open_stack(where, spec, label="threadpool") as target:
            _warm_up(target)
            for name, variant, needs in plan:
                if needs != limit:
                    continue
                say(f"  {name}")
                scenarios[name] = asyncio.run(_scenario(target, variant, k, seconds, every))
                scenarios[name]["threadpool_tokens"] = needs or DEFAULT_TOKENS
    idle = scenarios["idle"]["sync_endpoint_ms"]["p50"]
    return ThreadpoolResult(
        config={
            "tasks": k,
            "seconds": seconds,
            "probe_every_ms": args.every,
            "sync_endpoint": f"GET {SYNC_PATH}",
            "async_endpoint": f"GET {ASYNC_PATH}",
        },
        scenarios=scenarios,
        ratios={
            name: {
                "sync p50 / idle": ratio(s["sync_endpoint_ms"]["p50"], idle),
                "sync max / task seconds": ratio(s["sync_endpoint_ms"]["max"], seconds * 1000),
            }
            for name, s in scenarios.items()
        },
        target=where.kind,
    )


def render(data: dict[str, Any]) -> str:
    rows = []
    for name, s in data["scenarios"].items():
        rows.append(
            [
                name,
                s["threadpool_tokens"],
                s["sync_endpoint_ms"]["p50"],
                s["sync_endpoint_ms"]["max"],
                s["async_endpoint_ms"]["p50"],
                s["async_endpoint_ms"]["max"],
                s["schedule_ms"]["max"],
                s["tasks_span_s"],
            ]
        )
    table = markdown_table(
        [
            "scenario",
            "tokens",
            "sync endpoint p50 ms",
            "sync max ms",
            "async endpoint p50 ms",
            "async max ms",
            "slowest task request ms",
            "all tasks done after s",
        ],
        rows,
    )
    cfg = data["config"]
    notes = (
        f"{cfg['tasks']} tasks of {cfg['seconds']:g} s fired at once; probes every "
        f"{cfg['probe_every_ms']:g} ms for 0.9 × {cfg['seconds']:g} s on the sync endpoint "
        f"(`{cfg['sync_endpoint']}`, a `def`) and the async one (`{cfg['async_endpoint']}`). "
        "The task requests themselves need no token: the mechanics endpoints and their "
        "dependencies are `async def`. Load average at "
        f"the start: {data['conditions']['loadavg_1m']}."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax1, ax2) = charts.figure(1, 2, size=(12, 4.8))
    names = list(data["scenarios"])
    short = [n.replace(", THREADPOOL_TOKENS=", "\nTOKENS=") for n in names]
    sc = data["scenarios"]
    charts.grouped_bars(
        ax1,
        short,
        {
            "sync endpoint p50": [sc[n]["sync_endpoint_ms"]["p50"] for n in names],
            "sync endpoint max": [sc[n]["sync_endpoint_ms"]["max"] for n in names],
            "async endpoint max": [sc[n]["async_endpoint_ms"]["max"] for n in names],
        },
        ylabel="response time, ms (log)",
        colors={
            "sync endpoint p50": "#fdae6b",
            "sync endpoint max": "#e6550d",
            "async endpoint max": "#1f77b4",
        },
        log=True,
        fmt="{:.0f}",
    )
    ax1.tick_params(axis="x", labelsize=7)
    ax1.set_title("a sync endpoint while slow tasks run")
    for j, n in enumerate(names):
        xs = [x for x, _ in sc[n]["sync_timeline"]]
        ys = [y for _, y in sc[n]["sync_timeline"]]
        ax2.plot(
            xs,
            ys,
            marker=".",
            linewidth=1,
            label=short[j].replace("\n", ", "),
            color=charts.PALETTE[j % len(charts.PALETTE)],
        )
    ax2.set_yscale("log")
    ax2.set_xlabel("probe sent at, s after the tasks were fired")
    ax2.set_ylabel("sync endpoint response, ms (log)")
    ax2.legend(fontsize=7)
    ax2.set_title("each probe of the sync endpoint")
    charts.save(fig, path, data)


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
