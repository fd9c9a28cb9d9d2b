"""Latency: what scheduling the notification costs the response, four ways.

Modes (``POST /send-notification/{email}...``, the same validation everywhere):

- ``bare``: ``/bare`` on the same app, no task at all: the baseline. Measured on
  both apps; each side's ratio uses its own app's bare.
- ``bg``: BackgroundTasks (ledger write, then the work runs in this process after
  the response).
- ``celery``: ledger write + publish to Redis; a separate worker runs it.
- ``inline``: the work is done before answering (the chapter's "why background at
  all"): it should take at least ``NOTIFICATION_DELAY_SECONDS``.

Load: at concurrency c, c workers each send one request at the same moment every
``interval`` seconds (a burst of c simultaneous requests). The interval grows
with c so that BackgroundTasks' sleeping notifications never hold more than
``TASK_TOKEN_BUDGET`` of AnyIO's 40 thread tokens: past that, the sync endpoint
itself waits for a token, which is what ``threadpool`` measures, not this.
Modes are interleaved (rounds, order reversed every other round) so a noisy
neighbour affects them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from experiments.common import Progress, say
from experiments.perf import base
from experiments.perf.load import bursts, client_for, warm
from experiments.reporting.tables import markdown_table, targets_table
from experiments.stats import ratio, summary
from harness.stacks import StackSpec, Where, open_stack
from harness.target import Target, Unsupported
from shared.models import Implementation
from shared.settings import explicit_settings

NAME = "latency"
# (mode, app side, path suffix)
MODES: dict[str, tuple[str, str]] = {
    "bare@bg": ("bg", "/bare"),
    "bg": ("bg", ""),
    "bg-noledger": ("bg-noledger", ""),
    "bare@celery": ("celery", "/bare"),
    "celery": ("celery", ""),
    "celery-noledger": ("celery-noledger", ""),
    "inline": ("bg", "/inline"),
}
TASK_TOKEN_BUDGET = 16
# At most ~1/3 of one core's worth of server CPU per interval (a request with its
# background work costs a few ms here): below saturation, so the percentiles
# measure the response path, not a queue that grows.
MIN_INTERVAL = 0.05
CPU_PER_REQUEST = 0.012
TARGETS = {"bg": 1.10, "celery": 1.5}
# The instrument must not distort what it measures: each side with its ledger at
# most this much slower than without it, at c = 1.
LEDGER_TARGET = 1.10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--levels", type=int, nargs="+", help="concurrency levels (1 4 16)")
    parser.add_argument("--requests", type=int, help="requests per mode and level (600)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per level (2)")
    parser.add_argument(
        "--delay",
        type=float,
        help="NOTIFICATION_DELAY_SECONDS for the local stack (0.05); "
        "compose: the stack's own value, measured through /inline",
    )


def _config(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "levels": args.levels or ([1, 4] if quick else [1, 4, 16]),
        "requests": args.requests or (40 if quick else 600),
        "rounds": args.rounds or (1 if quick else 2),
        "delay": args.delay if args.delay is not None else 0.05,
    }


def interval_for(level: int, delay: float) -> float:
    return max(MIN_INTERVAL, level * CPU_PER_REQUEST, level * delay / TASK_TOKEN_BUDGET)


def _request(urls: dict[str, str], mode: str, level: int) -> Any:
    side, suffix = MODES[mode]
    base = urls[side]

    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(f"{base}/send-notification/u{level}x{i}@example.com{suffix}")

    return send


async def _segment(
    urls: dict[str, str], mode: str, level: int, n: int, interval: float
) -> dict[str, Any]:
    request = _request(urls, mode, level)
    progress = Progress(f"{mode:<11} c={level:<3}", n)
    async with client_for(level) as client:
        await warm(client, request, level)
        result = await bursts(
            client, request, total=n, concurrency=level, interval=interval, progress=progress
        )
    progress.close()
    return {
        "latencies": result.latencies(),
        "errors": result.errors,
        "client_cpu": result.client_cpu,
        "count": len(result.samples),
    }


def _settle(target: Target, delay: float) -> None:
    """Between segments: let BackgroundTasks finish, and drop Celery's backlog.

    The Celery worker (2 processes, ``delay`` per notification) cannot keep up with
    the bursts; its backlog is deleted so that draining it does not compete with
    the next segment for the 2 CPUs."""
    time.sleep(2 * delay + 0.3)
    target.purge_queue(Implementation.celery)


@dataclass
class LatencyResult:
    config: dict[str, Any]
    levels: dict[str, dict[str, Any]]
    ratios: dict[str, dict[str, float]]
    targets: list[dict[str, Any]]
    target: str
    errors: int = field(default=0)

    @property
    def ok(self) -> bool:
        return self.errors == 0


def measure(args: argparse.Namespace, where: Where) -> LatencyResult:
    cfg = _config(args)
    say(f"latency: levels {cfg['levels']}, {cfg['requests']} requests per mode and level")
    spec = StackSpec(("redis", "bg-api", "celery-api", "worker"))
    settings = explicit_settings(notification_delay_seconds=cfg["delay"])
    with (
        open_stack(where, spec, base=settings, label="latency") as target,
        contextlib.ExitStack() as extra,
    ):
        urls = {"bg": target.url("bg"), "celery": target.url("celery")}
        modes = list(MODES)
        for side in ("bg", "celery"):
            # Both sides write the request's ledger records (one round trip) before
            # answering: the comparison's bookkeeping. These apps show each side
            # without it (LEDGER_ENABLED=false), on the same stack.
            try:
                urls[f"{side}-noledger"] = extra.enter_context(
                    target.extra_api(side, ledger_enabled=False)
                )
            except Unsupported:
                modes.remove(f"{side}-noledger")
        # A compose stack runs with its own delay.
        delay = target.settings.notification_delay_seconds
        cfg["delay"] = delay
        raw: dict[int, dict[str, dict[str, Any]]] = {}
        for level in cfg["levels"]:
            interval = interval_for(level, delay)
            raw[level] = {
                m: {"latencies": [], "errors": 0, "client_cpu": 0.0, "count": 0} for m in modes
            }
            for rnd in range(cfg["rounds"]):
                order = modes if rnd % 2 == 0 else list(reversed(modes))
                for mode in order:
                    n = cfg["requests"] // cfg["rounds"]
                    if mode == "inline":  # each one takes `delay`: fewer are enough
                        n = max(10, n // 5)
                    seg = asyncio.run(_segment(urls, mode, level, n, interval))
                    acc = raw[level][mode]
                    acc["latencies"] += seg["latencies"]
                    for key in ("errors", "client_cpu", "count"):
                        acc[key] += seg[key]
                    if not mode.startswith("bare"):  # bare leaves nothing behind
                        _settle(target, delay)
        data = _analyse(raw, cfg)
        errors = sum(s["errors"] for lvl in data["levels"].values() for s in lvl.values())
        return LatencyResult(**data, target=target.name, errors=errors)


def _analyse(raw: dict[int, dict[str, dict[str, Any]]], cfg: dict[str, Any]) -> dict[str, Any]:
    levels: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, float]] = {}
    for level, modes in raw.items():
        stats = {}
        for mode, acc in modes.items():
            stats[mode] = {
                **summary(acc["latencies"]),
                "errors": acc["errors"],
                "client_cpu_ms_per_request": 1000 * acc["client_cpu"] / max(acc["count"], 1),
            }
        levels[str(level)] = stats
        ratios[str(level)] = {
            "bg/bare p50": ratio(stats["bg"]["p50"], stats["bare@bg"]["p50"]),
            "bg/bare p99": ratio(stats["bg"]["p99"], stats["bare@bg"]["p99"]),
            "bg-noledger/bare p50": ratio(
                stats.get("bg-noledger", {}).get("p50", math.nan), stats["bare@bg"]["p50"]
            ),
            "bg/bg-noledger p50": ratio(
                stats["bg"]["p50"], stats.get("bg-noledger", {}).get("p50", math.nan)
            ),
            "celery/bare p50": ratio(stats["celery"]["p50"], stats["bare@celery"]["p50"]),
            "celery/bare p99": ratio(stats["celery"]["p99"], stats["bare@celery"]["p99"]),
            "celery-noledger/bare p50": ratio(
                stats.get("celery-noledger", {}).get("p50", math.nan),
                stats["bare@celery"]["p50"],
            ),
            "celery/celery-noledger p50": ratio(
                stats["celery"]["p50"], stats.get("celery-noledger", {}).get("p50", math.nan)
            ),
            "inline p50 / delay": ratio(stats["inline"]["p50"], cfg["delay"] * 1000),
        }
    targets = []
    for side, limit in TARGETS.items():
        worst = max(r[f"{side}/bare p50"] for r in ratios.values())
        targets.append(
            {
                "target": f"{side} p50 ≤ {limit}× bare (every level)",
                "measured": worst,
                "met": worst <= limit,
            }
        )
    first = ratios[str(min(raw))]
    for side in ("bg", "celery"):
        measured = first[f"{side}/{side}-noledger p50"]
        if measured == measured:  # not NaN: the target ran without-ledger apps
            targets.append(
                {
                    "target": f"{side} with ledger ≤ {LEDGER_TARGET}× without "
                    f"(p50, c = {min(raw)})",
                    "measured": measured,
                    "met": measured <= LEDGER_TARGET,
                }
            )
    inline_min = min(r["inline p50 / delay"] for r in ratios.values())
    targets.append(
        {
            "target": "inline p50 ≈ the task's delay (≥ 1×)",
            "measured": inline_min,
            "met": inline_min >= 1.0,
        }
    )
    return {
        "config": {**cfg, "intervals": {str(lv): interval_for(lv, cfg["delay"]) for lv in raw}},
        "levels": levels,
        "ratios": ratios,
        "targets": targets,
    }


def render(data: dict[str, Any]) -> str:
    rows = []
    for level, stats in data["levels"].items():
        for mode, s in stats.items():
            rows.append([level, mode, s["n"], s["p50"], s["p95"], s["p99"], s["errors"]])
    table = markdown_table(
        ["concurrency", "mode", "requests", "p50 ms", "p95 ms", "p99 ms", "errors"], rows
    )
    ratio_keys = [
        "bg/bare p50",
        "bg/bare p99",
        "bg-noledger/bare p50",
        "bg/bg-noledger p50",
        "celery/bare p50",
        "celery/bare p99",
        "celery-noledger/bare p50",
        "celery/celery-noledger p50",
        "inline p50 / delay",
    ]
    ratio_rows = [[lv, *(r[k] for k in ratio_keys)] for lv, r in data["ratios"].items()]
    table += "\n\n" + markdown_table(["concurrency", *ratio_keys], ratio_rows)
    table += "\n\n" + targets_table(data["targets"])
    cfg = data["config"]
    cpu = [s["client_cpu_ms_per_request"] for st in data["levels"].values() for s in st.values()]
    notes = (
        f"NOTIFICATION_DELAY_SECONDS={cfg['delay']:g}; bursts of c simultaneous requests "
        f"every {', '.join(f'{v * 1000:.0f} ms (c={k})' for k, v in cfg['intervals'].items())}; "
        f"{cfg['rounds']} interleaved rounds. The load client (asyncio + httpx, keep-alive) "
        f"runs on the same {data['conditions']['cpus']} CPUs as the servers and spent "
        f"{min(cpu):.2f}–{max(cpu):.2f} ms of CPU per request; ratios against `bare` "
        "cancel most of that out. Load average at the start: "
        f"{data['conditions']['loadavg_1m']}."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax1, ax2) = charts.figure(1, 2, size=(12, 4.8))
    levels = list(data["levels"])
    modes = list(data["levels"][levels[0]])
    colors = {
        "bare@bg": "#bdbdbd",
        "bg": charts.COLORS["bg"],
        "bg-noledger": "#aec7e8",
        "bare@celery": "#757575",
        "celery-noledger": "#98df8a",
        "celery": charts.COLORS["celery"],
        "inline": charts.COLORS["inline"],
    }
    charts.grouped_bars(
        ax1,
        [f"c={lv}" for lv in levels],
        {m: [data["levels"][lv][m]["p50"] for lv in levels] for m in modes},
        ylabel="p50 response time, ms (log)",
        colors=colors,
        log=True,
        fmt="{:.1f}",
    )
    # p99 as a tick above each bar: the tail, without a second set of bars.
    n = len(modes)
    for j, mode in enumerate(modes):
        xs = [i + (j - (n - 1) / 2) * (0.8 / n) for i in range(len(levels))]
        ax1.scatter(
            xs,
            [data["levels"][lv][mode]["p99"] for lv in levels],
            marker="_",
            s=120,
            color="black",
            zorder=3,
            label="p99" if j == 0 else None,
        )
    ax1.legend(fontsize=7, ncol=2)
    ax1.set_title("response time per mode (bar: p50, tick: p99)")
    charts.grouped_bars(
        ax2,
        [f"c={lv}" for lv in levels],
        {
            "BackgroundTasks / bare": [data["ratios"][lv]["bg/bare p50"] for lv in levels],
            "BackgroundTasks, no ledger / bare": [
                data["ratios"][lv]["bg-noledger/bare p50"] for lv in levels
            ],
            "Celery / bare": [data["ratios"][lv]["celery/bare p50"] for lv in levels],
            "Celery, no ledger / bare": [
                data["ratios"][lv].get("celery-noledger/bare p50", math.nan) for lv in levels
            ],
        },
        ylabel="p50 ratio to the same app's bare endpoint",
        colors={
            "BackgroundTasks / bare": charts.COLORS["bg"],
            "BackgroundTasks, no ledger / bare": "#aec7e8",
            "Celery / bare": charts.COLORS["celery"],
            "Celery, no ledger / bare": "#98df8a",
        },
        fmt="{:.2f}×",
    )
    plotted = ("bg/bare p50", "bg-noledger/bare p50", "celery/bare p50", "celery-noledger/bare p50")
    top = max((r[k] for r in data["ratios"].values() for k in plotted if r[k] == r[k]), default=2)
    ax2.set_ylim(0, max(top, TARGETS["celery"]) * 1.35)  # room for the legend
    charts.target_line(ax2, TARGETS["bg"], "bg target 1.10×")
    charts.target_line(ax2, TARGETS["celery"], "celery target 1.5×")
    ax2.set_title("the price of scheduling the task (p50 ratio)")
    charts.save(fig, path, data, extra=f"delay {data['config']['delay']:g}s")


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
