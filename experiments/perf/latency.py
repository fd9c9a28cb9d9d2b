"""Latency: what scheduling the notification costs the response.

Modes (``POST /send-notification/{email}...``, the same validation everywhere), for
each implementation declared in ``shared.services`` (``--implementations``):

- ``bare``: ``/bare`` on its own app, no task at all: the baseline. Each
  implementation's ratios use its own app's bare.
- ``route``: the route as it is (the ledger's write, then the hand-over: held in
  the API process, or handed to a broker for a separate worker).
- ``no ledger``: the same route on a second API process with LEDGER_ENABLED=false:
  the implementation's own cost without the comparison's instrument.

and ``inline`` on the first app that serves ``/send-notification/{email}/inline``:
the work done before answering (the chapter's "why background at all"): it should
take at least ``NOTIFICATION_DELAY_SECONDS``.

Load: at concurrency c, c workers each send one request at the same moment every
``interval`` seconds (a burst of c simultaneous requests). The interval grows
with c so that the sleeping notifications an API holds in process never hold more than
``TASK_TOKEN_BUDGET`` of AnyIO's 40 thread tokens: past that, the sync endpoint
itself waits for a token, which is what ``threadpool`` measures, not this.
Modes are interleaved (rounds, order reversed every other round) so a noisy
neighbour affects them alike. Between segments, each implementation's backlog is
dropped with its declared ``purge``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from experiments.common import Progress, add_implementations_argument, say
from experiments.perf import base
from experiments.perf.load import bursts, client_for, openapi, warm
from experiments.reporting.latency import (
    BARE,
    INLINE,
    LEDGER_TARGET,
    NO_LEDGER,
    ROUTE,
    TARGETS,
    VARIANTS,
    chart,
    render,
)
from experiments.stats import ratio, summary
from harness.stacks import NEEDED_SERVICES, StackSpec, Where, open_stack
from harness.target import Target, Unsupported
from shared.services import IMPLEMENTATIONS, Implementation
from shared.settings import explicit_settings

NAME = "latency"
TASK_TOKEN_BUDGET = 16
# At most ~1/3 of one core's worth of server CPU per interval (a request with its
# background work costs a few ms here): below saturation, so the percentiles
# measure the response path, not a queue that grows.
MIN_INTERVAL = 0.05
CPU_PER_REQUEST = 0.012
# The work done before answering, on the first app that serves it.
INLINE_PATH = "/send-notification/{email}/inline"


@dataclass(frozen=True)
class Mode:
    """One segment's requests: an implementation's variant, or inline."""

    implementation: Implementation
    variant: str  # one of VARIANTS, or INLINE

    @property
    def key(self) -> str:
        return INLINE if self.variant == INLINE else f"{self.implementation} {self.variant}"

    @property
    def suffix(self) -> str:
        return {BARE: "/bare", INLINE: "/inline"}.get(self.variant, "")

    @property
    def leaves_work(self) -> bool:
        """Does it leave tasks behind (to finish or to purge) for the next segment?"""
        return self.variant in (ROUTE, NO_LEDGER)


def modes_for(selected: Sequence[Implementation], inline_by: Implementation | None) -> list[Mode]:
    """Every selected implementation's variants, in the declaration's order given,
    then inline where an app serves it."""
    modes = [Mode(impl, v) for impl in selected for v in VARIANTS]
    return [*modes, *([Mode(inline_by, INLINE)] if inline_by is not None else [])]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    add_implementations_argument(parser, tuple(IMPLEMENTATIONS), "whose APIs to measure")
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
        "implementations": [i.value for i in args.implementations],
        "levels": args.levels or ([1, 4] if quick else [1, 4, 16]),
        "requests": args.requests or (40 if quick else 600),
        "rounds": args.rounds or (1 if quick else 2),
        "delay": args.delay if args.delay is not None else 0.05,
    }


def interval_for(level: int, delay: float) -> float:
    return max(MIN_INTERVAL, level * CPU_PER_REQUEST, level * delay / TASK_TOKEN_BUDGET)


def _request(url: str, mode: Mode, level: int) -> Any:
    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(f"{url}/send-notification/u{level}x{i}@example.com{mode.suffix}")

    return send


async def _segment(url: str, mode: Mode, level: int, n: int, interval: float) -> dict[str, Any]:
    request = _request(url, mode, level)
    progress = Progress(f"{mode.key:<17} c={level:<3}", n)
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


def _settle(target: Target, mode: Mode, delay: float) -> None:
    """After a segment: let the work held in an API finish, and drop the backlog an
    implementation's workers have not taken yet.

    A worker (2 processes, or 2 at once, ``delay`` per notification) cannot keep up
    with the bursts; its backlog is deleted (the implementation's declared purge) so
    that draining it does not compete with the next segment for the 2 CPUs."""
    time.sleep(2 * delay + 0.3)
    if mode.leaves_work and IMPLEMENTATIONS[mode.implementation].purge:
        target.purge_queue(mode.implementation)


def inline_server(target: Target, selected: Sequence[Implementation]) -> Implementation | None:
    """The first selected implementation whose API serves the inline route."""
    for impl in selected:
        if INLINE_PATH in openapi(target.url(impl)).get("paths", {}):
            return impl
    return None


@dataclass
class LatencyResult:
    config: dict[str, Any]
    implementations: dict[str, dict[str, Any]]
    inline: dict[str, Any] | None
    targets: list[dict[str, Any]]
    target: str
    errors: int = field(default=0)

    @property
    def ok(self) -> bool:
        return self.errors == 0


Raw = dict[int, dict[Mode, dict[str, Any]]]


def measure(args: argparse.Namespace, where: Where) -> LatencyResult:
    cfg = _config(args)
    selected: tuple[Implementation, ...] = args.implementations
    say(
        f"latency: {', '.join(selected)}; levels {cfg['levels']}, "
        f"{cfg['requests']} requests per mode and level"
    )
    services = tuple(dict.fromkeys(s for impl in selected for s in NEEDED_SERVICES[impl]))
    settings = explicit_settings(notification_delay_seconds=cfg["delay"])
    with (
        open_stack(where, StackSpec(services), base=settings, label="latency") as target,
        contextlib.ExitStack() as extra,
    ):
        inline_by = inline_server(target, selected)
        modes = modes_for(selected, inline_by)
        urls = {mode: target.url(mode.implementation) for mode in modes}
        for impl in selected:
            # Every API writes the request's ledger records (one round trip) before
            # answering: the comparison's bookkeeping. These apps show each one
            # without it (LEDGER_ENABLED=false), on the same stack.
            no_ledger = Mode(impl, NO_LEDGER)
            try:
                urls[no_ledger] = extra.enter_context(target.extra_api(impl, ledger_enabled=False))
            except Unsupported:
                modes.remove(no_ledger)
        # A compose stack runs with its own delay.
        delay = target.settings.notification_delay_seconds
        cfg["delay"] = delay
        cfg["inline_by"] = None if inline_by is None else inline_by.value
        raw: Raw = {}
        for level in cfg["levels"]:
            interval = interval_for(level, delay)
            raw[level] = {
                m: {"latencies": [], "errors": 0, "client_cpu": 0.0, "count": 0} for m in modes
            }
            for rnd in range(cfg["rounds"]):
                order = modes if rnd % 2 == 0 else list(reversed(modes))
                for mode in order:
                    n = cfg["requests"] // cfg["rounds"]
                    if mode.variant == INLINE:  # each one takes `delay`: fewer are enough
                        n = max(10, n // 5)
                    seg = asyncio.run(_segment(urls[mode], mode, level, n, interval))
                    acc = raw[level][mode]
                    acc["latencies"] += seg["latencies"]
                    for key in ("errors", "client_cpu", "count"):
                        acc[key] += seg[key]
                    if mode.variant != BARE:  # bare leaves nothing behind
                        _settle(target, mode, delay)
        data = analyse(raw, cfg)
        return LatencyResult(**data, target=target.name, errors=count_errors(data))


def count_errors(data: dict[str, Any]) -> int:
    stats = [
        s
        for d in data["implementations"].values()
        for lv in d["levels"].values()
        for s in lv.values()
    ]
    if data["inline"] is not None:
        stats += list(data["inline"]["levels"].values())
    return sum(int(s["errors"]) for s in stats)


def _stats(acc: dict[str, Any]) -> dict[str, Any]:
    return {
        **summary(acc["latencies"]),
        "errors": acc["errors"],
        "client_cpu_ms_per_request": 1000 * acc["client_cpu"] / max(acc["count"], 1),
    }


def _ratios(stats: dict[str, dict[str, Any]]) -> dict[str, float]:
    """One implementation's ratios at one level (NaN where a mode did not run)."""

    def p(variant: str, pct: str) -> float:
        return float(stats.get(variant, {}).get(pct, math.nan))

    return {
        "route/bare p50": ratio(p(ROUTE, "p50"), p(BARE, "p50")),
        "route/bare p99": ratio(p(ROUTE, "p99"), p(BARE, "p99")),
        "no ledger/bare p50": ratio(p(NO_LEDGER, "p50"), p(BARE, "p50")),
        "route/no ledger p50": ratio(p(ROUTE, "p50"), p(NO_LEDGER, "p50")),
    }


def analyse(raw: Raw, cfg: dict[str, Any]) -> dict[str, Any]:
    """The report's data from the segments' samples: per implementation, its modes'
    statistics and ratios at every level; inline's; the targets."""
    implementations: dict[str, dict[str, Any]] = {}
    inline: dict[str, Any] | None = None
    for level, modes in raw.items():
        for mode, acc in modes.items():
            impl = mode.implementation
            if mode.variant == INLINE:
                inline = inline or {"implementation": impl.value, "levels": {}, "p50/delay": {}}
                inline["levels"][str(level)] = s = _stats(acc)
                inline["p50/delay"][str(level)] = ratio(s["p50"], cfg["delay"] * 1000)
                continue
            entry = implementations.setdefault(
                impl.value,
                {"title": IMPLEMENTATIONS[impl].title, "levels": {}, "ratios": {}},
            )
            entry["levels"].setdefault(str(level), {})[mode.variant] = _stats(acc)
    for entry in implementations.values():
        entry["ratios"] = {lv: _ratios(stats) for lv, stats in entry["levels"].items()}
    first = str(min(raw))
    targets = []
    for name, entry in implementations.items():
        limit = TARGETS[IMPLEMENTATIONS[Implementation(name)].delivery]
        worst = max(r["route/bare p50"] for r in entry["ratios"].values())
        targets.append(
            {
                "target": f"{entry['title']} p50 ≤ {limit}× bare (every level)",
                "measured": worst,
                "met": worst <= limit,
            }
        )
    for entry in implementations.values():
        measured = entry["ratios"][first]["route/no ledger p50"]
        if measured == measured:  # not NaN: the target ran without-ledger apps
            targets.append(
                {
                    "target": f"{entry['title']} with ledger ≤ {LEDGER_TARGET}× without "
                    f"(p50, c = {first})",
                    "measured": measured,
                    "met": measured <= LEDGER_TARGET,
                }
            )
    if inline is not None:
        inline_min = min(inline["p50/delay"].values())
        targets.append(
            {
                "target": "inline p50 ≈ the task's delay (≥ 1×)",
                "measured": inline_min,
                "met": inline_min >= 1.0,
            }
        )
    return {
        "config": {**cfg, "intervals": {str(lv): interval_for(lv, cfg["delay"]) for lv in raw}},
        "implementations": implementations,
        "inline": inline,
        "targets": targets,
    }


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
