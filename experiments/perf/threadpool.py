"""Thread pool: sync background tasks share AnyIO's thread limiter (40 tokens by
default) with sync endpoints and sync dependencies.

It measures every implementation declared in ``shared.services`` whose tasks are
held in its API's process (``Delivery.in_process``) and whose API serves the
mechanics routes: a task handed to a broker holds no token of the API's.

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
from typing import Any

import httpx

from experiments.common import say
from experiments.perf import base
from experiments.perf.load import ProbePool, open_loop, openapi, wait_finished
from experiments.perf.loop_lag import MECHANICS, held_in_process, serves_mechanics
from experiments.reporting.threadpool import chart, render
from experiments.stats import ratio, summary
from harness.stacks import StackSpec, Where, open_stack
from harness.target import Target, Unsupported
from shared.services import IMPLEMENTATIONS

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
    target: Target, base: str, variant: str | None, k: int, seconds: float, every: float
) -> dict[str, Any]:
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

        path = f"{MECHANICS.format(variant)}?seconds={seconds:g}"

        async def fire_one(i: int) -> tuple[float, int, bytes]:
            t = time.perf_counter()
            status, body = await fire.fetch("POST", path)
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


def _warm_up(base: str) -> None:
    """The first request to each endpoint, and the pool's first threads, cost tens of
    ms once: not what this measures."""
    with httpx.Client(timeout=10) as client:
        for variant in ("sync-task", "async-task"):
            client.post(base + MECHANICS.format(variant), params={"seconds": 0}).raise_for_status()
        for _ in range(20):
            client.get(base + SYNC_PATH).raise_for_status()
            client.get(base + ASYNC_PATH).raise_for_status()


@dataclass
class ThreadpoolResult:
    config: dict[str, Any]
    # Per implementation (its value): title, scenarios, ratios.
    implementations: dict[str, dict[str, Any]]
    target: str

    @property
    def ok(self) -> bool:
        return all(
            s["finished"] == s["tasks"] and s["probe_errors"] == 0
            for entry in self.implementations.values()
            for s in entry["scenarios"].values()
        )


def plan(k: int, tokens: int) -> list[tuple[str, str | None, int | None]]:
    """Each scenario: its name, the mechanics variant fired (None: idle), and the
    limiter it needs (None: AnyIO's default)."""
    return [
        ("idle", None, None),
        (f"{k} sync tasks", "sync-task", None),
        (f"{k} async tasks", "async-task", None),
        (f"{k} sync tasks, THREADPOOL_TOKENS={tokens}", "sync-task", tokens),
    ]


def ratios_of(scenarios: dict[str, dict[str, Any]], seconds: float) -> dict[str, dict[str, float]]:
    idle = scenarios["idle"]["sync_endpoint_ms"]["p50"]
    return {
        name: {
            "sync p50 / idle": ratio(s["sync_endpoint_ms"]["p50"], idle),
            "sync max / task seconds": ratio(s["sync_endpoint_ms"]["max"], seconds * 1000),
        }
        for name, s in scenarios.items()
    }


def measure(args: argparse.Namespace, where: Where) -> ThreadpoolResult:
    k = args.tasks or (48 if args.quick else 60)
    seconds = args.seconds or (0.6 if args.quick else 2.0)
    every = args.every / 1000
    tokens = k + DEFAULT_TOKENS
    say(f"threadpool: {k} tasks of {seconds:g} s, probes every {args.every:g} ms")
    measured: dict[str, dict[str, Any]] = {}
    for impl in held_in_process():
        title = IMPLEMENTATIONS[impl].title
        scenarios: dict[str, dict[str, Any]] = {}
        # Two stacks: AnyIO's default limiter, then the raised one.
        for limit in (None, tokens):
            spec = StackSpec.for_implementation(impl, settings={"threadpool_tokens": limit})
            with open_stack(where, spec, label=NAME) as target:
                url = target.url(impl)
                if not serves_mechanics(openapi(url)):
                    say(f"threadpool: {title} serves no mechanics routes: not measured")
                    break
                _warm_up(url)
                for name, variant, needs in plan(k, tokens):
                    if needs != limit:
                        continue
                    say(f"  {title}: {name}")
                    scenarios[name] = asyncio.run(
                        _scenario(target, url, variant, k, seconds, every)
                    )
                    scenarios[name]["threadpool_tokens"] = needs or DEFAULT_TOKENS
        if scenarios:
            measured[impl.value] = {
                "title": title,
                "scenarios": scenarios,
                "ratios": ratios_of(scenarios, seconds),
            }
    if not measured:
        raise Unsupported("threadpool: no implementation held in process serves the mechanics")
    return ThreadpoolResult(
        config={
            "tasks": k,
            "seconds": seconds,
            "probe_every_ms": args.every,
            "sync_endpoint": f"GET {SYNC_PATH}",
            "async_endpoint": f"GET {ASYNC_PATH}",
        },
        implementations=measured,
        target=where.kind,
    )


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
