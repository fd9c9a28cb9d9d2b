"""Capacity: how many requests a second each API takes at saturation, and what each
step of the hand-over costs it.

A closed loop (``experiments.perf.load.closed_loop``: C keep-alive connections,
each sending the next request as soon as the last is answered) against one
uvicorn process per API, then two (``--workers``), on ``POST
/send-notification/{email}``-shaped routes that each hand two tasks over one
step closer to the real route (the rungs: ``celery_app.experiment_routes`` and
``fastapi_bg.experiment_routes``). Every rung is measured in the same run,
interleaved (round after round, a slice each), and reports its req/s, p50/p99 at
that concurrency, and the API's CPU per request (its process tree, psutil).

No Celery worker runs: the Celery API only publishes (the experiment empties the
queues between slices); the BackgroundTasks API also does the work, which is its
point. Every process here, the client included, shares this machine's CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.common import Progress, say
from experiments.perf import base
from experiments.perf.load import closed_loop
from experiments.reporting.tables import markdown_table
from experiments.stats import percentile, ratio
from harness.stacks import StackSpec, Where, open_stack
from harness.target import API, Target

NAME = "capacity"
EMAIL = "capacity@example.com"

# Each side's rungs, in order: the route each calls (``{e}``: the email).
RUNGS: dict[str, list[tuple[str, str]]] = {
    "celery": [
        ("bare", "/send-notification/{e}/bare"),
        ("bare-def", "/capacity/bare-def/{e}"),
        ("floor", "/capacity/floor/{e}"),
        ("stock", "/capacity/stock/{e}"),
        ("stock-events", "/capacity/stock-events/{e}"),
        ("publish", "/capacity/publish/{e}"),
        ("publish-ledger", "/capacity/publish-ledger/{e}"),
        ("default", "/send-notification/{e}"),
    ],
    "bg": [
        ("bare", "/send-notification/{e}/bare"),
        ("noop", "/capacity/noop/{e}"),
        ("work", "/capacity/work/{e}"),
        ("work-ledger", "/capacity/work-ledger/{e}"),
        ("default", "/send-notification/{e}"),
    ],
}
LABELS = {
    "bare": "bare (no task)",
    "bare-def": "bare, in a def route (the thread-pool trip)",
    "floor": "one round trip for both messages (the floor)",
    "stock": "stock send_task, no sent event",
    "stock-events": "stock send_task, sent events",
    "publish": "the project's publish",
    "publish-ledger": "the project's publish + the ledger",
    "noop": "add_task of a no-op",
    "work": "the work",
    "work-ledger": "the work + the ledger",
    "default": "the route as it is",
}
# The Celery rungs whose events follow the stack's CELERY_SEND_SENT_EVENT.
PROJECT = ("publish", "publish-ledger", "default")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--concurrency", type=int, nargs="+", help="closed-loop connections")
    parser.add_argument("--seconds", type=float, help="one slice of one rung (2.0)")
    parser.add_argument("--rounds", type=int, help="slices per rung, interleaved (3)")
    parser.add_argument("--processes", type=int, nargs="+", help="uvicorn processes (1 2)")
    parser.add_argument(
        "--broker", choices=("redis", "rabbitmq", "both"), default="both", help="the broker"
    )


@dataclass
class CapacityResult:
    config: dict[str, Any]
    runs: list[dict[str, Any]]
    cross_check: dict[str, Any] | None
    errors: int
    target: str

    @property
    def ok(self) -> bool:
        return self.errors == 0


def _cpu(target: Target, service: str) -> float | None:
    """CPU seconds the service's process tree has used (local processes only)."""
    import psutil

    state = target.status().get(service)
    if state is None or state.pid is None:
        return None
    try:
        root = psutil.Process(state.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def _purge(target: Target) -> None:
    from celery_app.experiment_routes import purge

    purge(target.settings)


def _drain(target: Target, service: str, timeout: float = 60.0) -> float:
    """Until the service's processes are idle (its backlog of work done): how long
    that took. BackgroundTasks answers before it works, so a slice's tasks may still
    run after its last answer; they are its cost, not the next slice's."""
    import time

    window = 0.1
    start = time.monotonic()
    last = _cpu(target, service)
    while last is not None and time.monotonic() - start < timeout:
        time.sleep(window)
        now = _cpu(target, service)
        if now is None or now - last < 0.1 * window:  # under 10% of a core: idle
            break
        last = now
    # The last window was idle already: it is not the work's.
    return max(0.0, time.monotonic() - start - window)


def _slice(
    target: Target, side: str, path: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    # The API's CPU from the moment the counted window opens (after the warm-up).
    readings: list[float | None] = []
    s = asyncio.run(
        closed_loop(
            target.url(side),
            path,
            concurrency=concurrency,
            seconds=seconds,
            on_counting=lambda: readings.append(_cpu(target, API[side])),
        )
    )
    before = readings[0] if readings else None
    # The BackgroundTasks API also does the work: the slice lasts until it is done.
    drained = _drain(target, API[side]) if side == "bg" else 0.0
    after = _cpu(target, API[side])
    cpu = None if before is None or after is None else after - before
    return {
        "requests": s.requests,
        "errors": s.errors,
        "seconds": s.seconds + drained,
        "drain_s": drained,
        "latencies_ms": [x * 1000 for x in s.latencies],
        "cpu_s": cpu,
    }


def _summarize(slices: list[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(x["requests"] for x in slices)
    seconds = sum(x["seconds"] for x in slices)
    latencies = [v for x in slices for v in x["latencies_ms"]]
    cpus = [x["cpu_s"] for x in slices]
    # The API's CPU per answered request, from the end of the warm-up to the end of
    # the slice (its drain included).
    cpu_us = sum(cpus) / requests * 1e6 if requests and None not in cpus else None
    return {
        "requests": requests,
        "errors": sum(x["errors"] for x in slices),
        "per_s": requests / seconds if seconds else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "cpu_us": cpu_us,
        "drain_s": sum(x.get("drain_s", 0.0) for x in slices),
    }


def _ladder(
    target: Target,
    sides: list[str],
    rungs: dict[str, list[tuple[str, str]]],
    levels: list[int],
    rounds: int,
    seconds: float,
    label: str,
) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    todo = [(side, name, path) for side in sides for name, path in rungs[side]]
    progress = Progress(label, len(levels) * rounds * len(todo))
    for c in levels:
        slices: dict[tuple[str, str], list[dict[str, Any]]] = {(s, n): [] for s, n, _ in todo}
        for _ in range(rounds):
            for side, name, path in todo:
                slices[(side, name)].append(_slice(target, side, path.format(e=EMAIL), c, seconds))
                progress.advance()
                if side == "celery":
                    _purge(target)
        out[str(c)] = {
            side: {n: _summarize(slices[(side, n)]) for s, n, _ in todo if s == side}
            for side in sides
        }
    progress.close()
    return out


def _wrk(url: str, concurrency: int, seconds: float) -> float | None:
    """The same rung through wrk (an independent client), when it is installed: req/s."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    script = Path(__file__).with_name("wrk_post.lua")
    done = subprocess.run(
        [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    for line in done.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def measure(args: argparse.Namespace, where: Where) -> CapacityResult:
    quick = args.quick
    levels = args.concurrency or ([4] if quick else [1, 8, 32])
    seconds = args.seconds or (0.5 if quick else 2.0)
    rounds = args.rounds or (1 if quick else 3)
    processes = args.processes or ([1] if quick else [1, 2])
    brokers = ["redis", "rabbitmq"] if args.broker == "both" else [args.broker]
    config = {
        "concurrency": levels,
        "seconds_per_slice": seconds,
        "rounds": rounds,
        "processes": processes,
        "brokers": brokers,
        "NOTIFICATION_DELAY_SECONDS": 0,
    }
    runs: list[dict[str, Any]] = []
    cross_check: dict[str, Any] | None = None
    errors = 0
    settings = {"notification_delay_seconds": 0.0}
    for broker in brokers:
        # The project's sent events as the setting's default has them, and (on one
        # process) the other way: the ladder compares like with like.
        variants: list[tuple[int, str | None]] = [(p, None) for p in processes]
        if not quick:
            variants.append((processes[0], "other"))
        for p, other in variants:
            sides = ["bg", "celery"] if broker == brokers[0] and other is None else ["celery"]
            spec = StackSpec(
                ("redis", "broker", *(API[s] for s in sides)),
                settings=settings,
                broker=broker,
                api_processes=p,
            )
            with open_stack(where, spec, label=f"capacity-{broker}") as target:
                events = target.settings.celery_send_sent_event
                if other is not None:
                    events = not events
                    target.reconfigure(API["celery"], celery_send_sent_event=events)
                say(
                    f"capacity: {broker}, {p} process(es) per API, the project's sent events "
                    f"{'on' if events else 'off'}: {', '.join(sides)}"
                )
                levels_data = _ladder(
                    target, sides, RUNGS, levels, rounds, seconds, f"capacity {broker} {p}p"
                )
                if cross_check is None and p == 1 and broker == "redis":
                    c = levels[-1]
                    url = target.url("celery") + f"/send-notification/{EMAIL}"
                    ours = levels_data[str(c)]["celery"]["default"]["per_s"]
                    theirs = _wrk(url, c, max(seconds * rounds, 3.0))
                    _purge(target)
                    cross_check = {
                        "rung": "celery default",
                        "concurrency": c,
                        "ours_per_s": ours,
                        "wrk_per_s": theirs,
                        "wrk_over_ours": ratio(theirs, ours) if theirs else None,
                    }
            errors += sum(
                r["errors"] for lv in levels_data.values() for s in lv.values() for r in s.values()
            )
            runs.append(
                {
                    "broker": broker,
                    "processes": p,
                    "sent_event": events,
                    "levels": levels_data,
                }
            )
    return CapacityResult(config, runs, cross_check, errors, where.kind)


def _rung_row(run: dict[str, Any], side: str, level: str) -> list[list[Any]]:
    rows = []
    stock = run["levels"][level]["celery"] if side == "celery" else {}
    same = "stock-events" if run["sent_event"] else "stock"
    for name, r in run["levels"][level][side].items():
        vs_stock = ratio(r["per_s"], stock[same]["per_s"]) if side == "celery" else None
        vs_floor = ratio(r["per_s"], stock["floor"]["per_s"]) if side == "celery" else None
        on = side == "celery" and name in PROJECT and run["sent_event"]
        events = " (events on)" if on else ""
        rows.append(
            [
                f"{LABELS[name]}{events}",
                r["per_s"],
                r["p50_ms"],
                r["p99_ms"],
                "—" if r["cpu_us"] is None else r["cpu_us"],
                "—" if vs_stock is None else vs_stock,
                "—" if vs_floor is None else vs_floor,
                r["errors"],
            ]
        )
    return rows


def render(data: dict[str, Any]) -> str:
    cfg = data["config"]
    parts = []
    headers = [
        "rung",
        "req/s",
        "p50 ms",
        "p99 ms",
        "API CPU µs/request",
        "× stock (same events)",
        "× floor",
        "errors",
    ]
    for run in data["runs"]:
        level = str(max(int(c) for c in run["levels"]))
        for side in run["levels"][level]:
            title = (
                f"**{'Celery' if side == 'celery' else 'BackgroundTasks'}** "
                + (f"on {run['broker']}, " if side == "celery" else "")
                + f"{run['processes']} process{'es' if run['processes'] > 1 else ''}, "
                f"{level} connections"
                + (
                    f", the project's sent events {'on' if run['sent_event'] else 'off'}"
                    if side == "celery"
                    else ""
                )
            )
            parts.append(f"{title}\n\n{markdown_table(headers, _rung_row(run, side, level))}")
    check = data.get("cross_check")
    if check and check.get("wrk_per_s"):
        parts.append(
            f"Cross-check: {check['rung']} at {check['concurrency']} connections, this "
            f"client {check['ours_per_s']:.0f} req/s, wrk {check['wrk_per_s']:.0f} req/s "
            f"(wrk/ours {check['wrk_over_ours']:.2f})."
        )
    parts.append(
        f"Closed loop: each of C keep-alive connections sends the next request as soon as "
        f"the last is answered; {cfg['rounds']} slices of {cfg['seconds_per_slice']:g} s per "
        "rung, interleaved, after a warm-up; the API's CPU from its process tree. No worker "
        "runs: the Celery API only publishes (the queues are emptied between slices); the "
        "BackgroundTasks API also does the work (NOTIFICATION_DELAY_SECONDS=0), after it "
        "answers: its slice lasts until that work is done too (its req/s counts the drain, "
        "its CPU the work). *× stock*: "
        "req/s over the stock send_task rung with the same sent-event setting, in the same "
        "run; *× floor*: over one round trip for both messages. Every process and the client "
        "share this machine's CPUs."
    )
    return "\n\n".join(parts)


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    runs = [r for r in data["runs"] if r["processes"] == 1]
    fig, axes = charts.figure(1, max(len(runs), 1), size=(6 * max(len(runs), 1), 4.8))
    for ax, run in zip(axes, runs, strict=False):
        level = str(max(int(c) for c in run["levels"]))
        names, values, colors = [], [], []
        for side, color in (("bg", "#1f77b4"), ("celery", "#2ca02c")):
            for name, r in run["levels"][level].get(side, {}).items():
                names.append(f"{side}: {name}")
                values.append(r["per_s"])
                colors.append(color)
        ax.barh(range(len(names)), values, color=colors)
        for y, v in enumerate(values):
            ax.annotate(f"{v:.0f}", (v, y), va="center", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"req/s at {level} connections, 1 process")
        events = "on" if run["sent_event"] else "off"
        ax.set_title(f"{run['broker']}, the project's sent events {events}", fontsize=9)
    charts.save(fig, path, data)


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
