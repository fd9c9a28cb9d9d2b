"""Dispatch: what one Celery publish costs, next to a raw Redis round trip.

In this process, against a redis-server of its own (no HTTP, no worker):

- ``lpush``: redis-py ``LPUSH`` of a payload as long as a Celery message, over
  the same kind of connection kombu uses (redis-py, TCP loopback): the floor.
- ``send_task, no sent-event``: ``Celery.send_task`` with the project's settings
  except ``task_send_sent_event`` (the event Flower uses to show queued tasks).
- ``send_task``: the project's settings, exactly what the Celery API calls.
- ``API schedule()``: the Celery API's whole hand-over: ledger write + send_task.

Where the time goes: the Redis commands each call sends (``INFO commandstats``
before and after), the client CPU per call, and a profile of ``send_task``'s
hottest functions. Messages go to a queue no worker reads (``dispatch-bench``),
which is deleted afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from experiments import charts, report
from experiments.load import (
    Progress,
    add_common_arguments,
    conditions,
    open_target,
    ratio,
    reports_dir,
    say,
    summary,
)
from experiments.processes import LocalStack

NAME = "dispatch"
QUEUE = "dispatch-bench"
TASK = "logs.write"
VARIANTS = ["lpush", "send_task, no sent-event", "send_task", "API schedule()"]
TARGET_RATIO = 3.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--calls", type=int, help="timed calls per variant (3000)")
    parser.add_argument("--redis-url", help="measure against this Redis instead of starting one")
    # Used by --target compose: the measurement runs inside the celery-api container
    # (compose does not publish Redis) and prints its data as JSON.
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)


def _callables(url: str) -> tuple[dict[str, Callable[[], object]], int, Callable[[], None]]:
    from celery_app.main import CeleryScheduler
    from celery_app.worker import create_celery
    from shared.ledger import Ledger, connect
    from shared.models import Implementation, TaskKind
    from shared.settings import Settings

    settings = Settings(redis_url=url)
    celery = create_celery(settings)
    quiet = create_celery(settings)
    quiet.conf.task_send_sent_event = False
    ledger_client = connect(url)
    scheduler = CeleryScheduler(celery, Ledger(ledger_client, Implementation.celery))
    kwargs = {"message": "item created: 노트북 (1,500,000.00)"}

    # The payload of the raw LPUSH is as long as the message Celery actually sends.
    raw = redis.Redis.from_url(url)
    celery.send_task(TASK, kwargs=kwargs, task_id=str(uuid.uuid4()), queue=QUEUE)
    message = raw.lindex(QUEUE, 0) or b""
    payload = b"x" * len(message)

    def send(app: Any) -> Callable[[], object]:
        return lambda: app.send_task(TASK, kwargs=kwargs, task_id=str(uuid.uuid4()), queue=QUEUE)

    def schedule() -> object:
        # What the API does per task, minus HTTP (CeleryScheduler.schedule), on the bench queue.
        task_id = str(uuid.uuid4())
        scheduler.ledger.queued(task_id, TaskKind.log.value)
        return celery.send_task(TASK, kwargs=kwargs, task_id=task_id, queue=QUEUE)

    fns: dict[str, Callable[[], object]] = {
        "lpush": lambda: raw.lpush(QUEUE, payload),
        "send_task, no sent-event": send(quiet),
        "send_task": send(celery),
        "API schedule()": schedule,
    }

    def close() -> None:
        raw.delete(QUEUE)
        raw.close()
        ledger_client.close()
        celery.close()
        quiet.close()

    return fns, len(message), close


def _commandstats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def measure(url: str, calls: int) -> dict[str, Any]:
    fns, message_bytes, close = _callables(url)
    admin = redis.Redis.from_url(url)
    try:
        for fn in fns.values():  # connections, pools, declarations: not measured
            for _ in range(50):
                fn()
        # Interleaved blocks, so a noisy neighbour hits every variant alike.
        times: dict[str, list[float]] = {v: [] for v in fns}
        cpu: dict[str, float] = dict.fromkeys(fns, 0.0)
        block = 100
        progress = Progress("dispatch calls", calls * len(fns))
        for _ in range(max(1, calls // block)):
            for name, fn in fns.items():
                c0 = time.process_time()
                for _ in range(block):
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
                cpu[name] += time.process_time() - c0
                progress.advance(block)
            admin.delete(QUEUE)
        progress.close()
        # Redis commands per call, one variant at a time.
        commands: dict[str, dict[str, float]] = {}
        n = min(calls, 500)
        for name, fn in fns.items():
            before = _commandstats(admin)
            for _ in range(n):
                fn()
            after = _commandstats(admin)
            delta = {k: (after[k] - before.get(k, 0)) / n for k in after}
            # INFO itself is one command on the admin connection.
            delta["info"] = delta.get("info", 0) - 1 / n
            commands[name] = {k: round(v, 3) for k, v in delta.items() if v > 0.001}
        admin.delete(QUEUE)
        profile, top, constructions = _profile(fns["send_task"], n)
        # kombu's Redis channel builds a new redis.Redis client object for each
        # command it sends (conn_or_acquire); redis-py fills ~170 response callbacks
        # per instance. Timed on its own, since it shows up at the top of the profile.
        t = time.perf_counter()
        for _ in range(n):
            redis.Redis(connection_pool=admin.connection_pool)
        construct_us = 1e6 * (time.perf_counter() - t) / n
    finally:
        close()
        admin.close()
    stats = {name: summary(ts, scale=1e6) for name, ts in times.items()}  # microseconds
    for name in stats:
        stats[name]["client_cpu_us"] = 1e6 * cpu[name] / max(len(times[name]), 1)
        stats[name]["redis_commands"] = sum(commands[name].values())
    lpush = stats["lpush"]["p50"]
    return {
        "message_bytes": message_bytes,
        "calls": calls,
        "variants": stats,
        "commands": commands,
        "profile": profile,
        "top_functions": top,
        "redis_clients_per_send_task": constructions,
        "redis_client_construction_us": construct_us,
        "ratios": {
            name: {"p50": ratio(s["p50"], lpush), "mean": ratio(s["mean"], stats["lpush"]["mean"])}
            for name, s in stats.items()
        },
        "targets": [
            {
                "target": f"send_task p50 ≤ {TARGET_RATIO:g}× LPUSH p50",
                "measured": ratio(stats["send_task"]["p50"], lpush),
                "met": ratio(stats["send_task"]["p50"], lpush) <= TARGET_RATIO,
            }
        ],
    }


def _profile(
    fn: Callable[[], object], n: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Where ``send_task`` spends its own time (tottime): by package, the top
    functions, and how many redis.Redis objects it constructs per call."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    st = pstats.Stats(prof)
    raw_stats: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw_stats.values()) or 1.0
    groups: dict[str, float] = {}
    functions = []
    constructions = 0.0
    for (filename, line, func), (_cc, nc, tottime, _ct, _callers) in raw_stats.items():
        groups[_package(filename)] = groups.get(_package(filename), 0.0) + tottime
        short = re.sub(r".*(site-packages|python3\.\d+)/", "", filename)
        functions.append((tottime, f"{short}:{line}({func})", nc / n))
        if short == "redis/client.py" and func == "__init__":
            constructions = nc / n
    by_package = [
        {"where": k, "share": v / total, "us_per_call": 1e6 * v / n}
        for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
    ][:8]
    top = [
        {"function": name, "share": tt / total, "calls_per_send": round(calls, 1)}
        for tt, name, calls in sorted(functions, reverse=True)[:8]
    ]
    return by_package, top, constructions


def _package(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (json, socket I/O, uuid, ...)"
    m = re.search(r"site-packages/([^/]+)/", filename)
    if m:
        return m.group(1)
    m = re.search(r"python3\.\d+/(?:([^/]+)/|([^/]+)\.py)", filename)
    if m:
        return f"stdlib {m.group(1) or m.group(2)}"
    return Path(filename).parent.name or filename


def _in_compose(args: argparse.Namespace) -> dict[str, Any]:
    """Run the measurement inside the celery-api container (compose does not
    publish Redis) and bring its JSON back. The image holds the app, not the
    experiments: they are copied in for the run and removed after it."""
    base = ["docker", "compose"] + (["-p", args.compose_project] if args.compose_project else [])
    bench = "/tmp/dispatch-bench"

    def compose(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*base, *argv], capture_output=True, text=True, timeout=600)
        if check and done.returncode != 0:
            raise RuntimeError(f"{shlex.join([*base, *argv])} failed:\n{done.stderr[-3000:]}")
        return done

    inner = f"PYTHONPATH={bench}:/app python -m experiments dispatch --json-only"
    if args.quick:
        inner += " --quick"
    if args.calls:
        inner += f" --calls {int(args.calls)}"
    # Database 15 of the stack's Redis: the bench keys and events stay out of the
    # real queue and out of Flower (kombu prefixes fanout channels with the db).
    inner += ' --redis-url "${REDIS_URL%/*}/15"'
    compose("exec", "-T", "celery-api", "mkdir", "-p", bench)
    try:
        compose("cp", str(Path(__file__).parent), f"celery-api:{bench}/experiments")
        say("dispatch: measuring inside the celery-api container")
        done = compose("exec", "-T", "-w", bench, "celery-api", "sh", "-c", inner)
    finally:
        compose("exec", "-T", "celery-api", "rm", "-rf", bench, check=False)
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return data


def run(args: argparse.Namespace) -> int:
    calls = args.calls or (300 if args.quick else 3000)
    if args.json_only or args.redis_url:
        url = args.redis_url or os.environ.get("REDIS_URL", "redis://localhost:6379/0")
        data = measure(url, calls)
        data["target"] = "given Redis"
        if args.json_only:
            print(json.dumps(data))
            return 0
    elif args.target == "compose":
        data = _in_compose(args)
        data["target"] = "compose (inside the celery-api container)"
    else:
        with open_target(args, ("redis",)) as stack:
            assert isinstance(stack, LocalStack)
            data = measure(stack.redis_url, calls)
            data["target"] = stack.name
    data["conditions"] = conditions()
    _write(data, reports_dir(args))
    return 0


def _write(data: dict[str, Any], out: Path) -> None:
    rows = []
    for name, s in data["variants"].items():
        cmds = ", ".join(f"{k} {v:g}" for k, v in data["commands"][name].items())
        rows.append(
            [
                name,
                s["p50"],
                s["p95"],
                s["p99"],
                s["client_cpu_us"],
                data["ratios"][name]["p50"],
                cmds,
            ]
        )
    table = report.markdown_table(
        [
            "variant",
            "p50 µs",
            "p95 µs",
            "p99 µs",
            "client CPU µs",
            "p50 / LPUSH",
            "Redis commands per call",
        ],
        rows,
    )
    table += "\n\nWhere `send_task`'s own time goes (cProfile, grouped by package):\n\n"
    table += report.markdown_table(
        ["where", "share", "µs per call"],
        [[p["where"], f"{100 * p['share']:.0f} %", p["us_per_call"]] for p in data["profile"]],
    )
    table += "\n\nIts hottest functions (own time):\n\n" + report.markdown_table(
        ["function", "share", "calls per send_task"],
        [
            [f"`{t['function']}`", f"{100 * t['share']:.0f} %", t["calls_per_send"]]
            for t in data["top_functions"]
        ],
    )
    table += "\n\n" + report.markdown_table(
        ["target", "measured", "met"],
        [[t["target"], t["measured"], "yes" if t["met"] else "no"] for t in data["targets"]],
    )
    st = data["variants"]["send_task"]
    rtt = data["variants"]["lpush"]["p50"]
    notes = (
        f"![dispatch]({NAME}.png)\n\n"
        f"{data['calls']} timed calls per variant (interleaved blocks of 100), a "
        f"{data['message_bytes']}-byte message. One LPUSH round trip: {rtt:.0f} µs at p50; "
        f"send_task makes {st['redis_commands']:g} Redis calls and spends "
        f"{st['client_cpu_us']:.0f} µs of CPU in this process per call: building the "
        "message (headers, JSON, uuid), kombu's routing, the task-sent event (a second "
        "message: compare the row without it), and "
        f"{data['redis_clients_per_send_task']:g} new redis.Redis client objects "
        f"(kombu makes one per command; {data['redis_client_construction_us']:.0f} µs "
        "each, measured alone). Load average at the start: "
        f"{data['conditions']['loadavg_1m']}."
    )
    report.write(NAME, data, table, directory=out, notes=notes)
    _chart(data, out)


def _chart(data: dict[str, Any], out: Path) -> None:
    fig, (ax1, ax2) = charts.figure(1, 2, size=(12, 4.5))
    names = list(data["variants"])
    rtt = data["variants"]["lpush"]["p50"]
    wire = [
        min(data["variants"][n]["redis_commands"] * rtt, data["variants"][n]["p50"]) for n in names
    ]
    # kombu's client objects: one per Redis command it sends (not for the raw LPUSH).
    per = data["redis_client_construction_us"]
    build = [
        0.0
        if n == "lpush"
        else min(
            data["commands"][n].get("lpush", 0) + data["commands"][n].get("publish", 0),
            data["redis_clients_per_send_task"],
        )
        * per
        for n in names
    ]
    rest = [
        max(data["variants"][n]["p50"] - w - b, 0.0)
        for n, w, b in zip(names, wire, build, strict=True)
    ]
    ys = range(len(names))
    left2 = [w + b for w, b in zip(wire, build, strict=True)]
    ax1.barh(ys, wire, color="#9ecae1", label="Redis round trips (commands × LPUSH p50)")
    ax1.barh(ys, build, left=wire, color="#fdd0a2", label="new redis.Redis objects (kombu)")
    ax1.barh(ys, rest, left=left2, color="#fd8d3c", label="other Python in the caller")
    for y, n in zip(ys, names, strict=True):
        p50 = data["variants"][n]["p50"]
        ax1.annotate(
            f"{p50:.0f} µs ({data['ratios'][n]['p50']:.1f}×)",
            (p50, y),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax1.axvline(rtt * TARGET_RATIO, color="#d62728", linestyle="--", linewidth=1)
    ax1.annotate(
        f"target {TARGET_RATIO:g}× LPUSH",
        (rtt * TARGET_RATIO, len(names) - 0.5),
        color="#d62728",
        fontsize=7,
    )
    ax1.set_yticks(list(ys), names)
    ax1.invert_yaxis()
    ax1.set_xlabel("p50 per call, µs")
    ax1.legend(fontsize=7, loc="upper right")
    ax1.set_title("one hand-over, where the time goes")
    prof = data["profile"]
    ax2.barh(range(len(prof)), [p["us_per_call"] for p in prof], color="#fd8d3c")
    ax2.set_yticks(range(len(prof)), [p["where"] for p in prof], fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("µs per send_task, cProfile own time (profiling inflates it)")
    ax2.set_title("send_task's own time by package")
    charts.save(
        fig, out / f"{NAME}.png", extra=f"target {data['target']}", info=data.get("machine")
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(argparse.Namespace()))
