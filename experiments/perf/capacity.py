"""Capacity: how many requests a second each API takes at saturation, and what each
step of the hand-over costs it.

A closed loop (``experiments.perf.load.closed_loop``: C keep-alive connections,
each sending the next request as soon as the last is answered) against one
uvicorn process per API, then two (``--workers``), on ``POST
/send-notification/{email}``-shaped routes that each hand two tasks over one
step closer to the real route. Every rung is measured in the same run,
interleaved (round after round, a slice each), and reports its req/s, p50/p99 at
that concurrency, and the API's CPU per request (its process tree, psutil).

Each implementation declared in ``shared.services`` (``--implementations``) gets a
ladder, and its rungs are its API's own: ``bare`` (the shared baseline), then the
``POST /capacity/<rung>/{email}`` routes its package's experiment routes declare, in
their order, each labelled with its description, then the route as it is. Two rung
names are the references the tables compare with, where a ladder has them:
``floor`` (the messages' bytes, raw, in one round trip) and ``stock`` (the library
as it ships). An implementation whose settings have ``<implementation>_send_sent_event``
publishes an event per task sent: its ladder also runs (on one process) with that
switch the other way, and its stock rung with events is ``stock-events``.

No worker runs: an API that hands over to a broker only publishes, and what its
rungs fill is emptied between slices (its experiment routes' ``purge``); an API
that holds its tasks in process memory also does the work, which is its point.
The stack's broker (``--broker``) is the one of the implementations that need it
(``"broker"`` in their ``needs``); the others run on the first broker's stack only.
Every process here, the client included, shares this machine's CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.common import Progress, add_implementations_argument, say
from experiments.perf import base
from experiments.perf.load import closed_loop, openapi
from experiments.reporting.capacity import chart, render
from experiments.stats import percentile, ratio
from harness.stacks import StackSpec, Where, open_stack
from harness.target import API, Target
from shared.services import IMPLEMENTATIONS, Delivery, Implementation
from shared.settings import Settings

NAME = "capacity"
EMAIL = "capacity@example.com"


@dataclass(frozen=True)
class Rung:
    name: str
    path: str  # ``{e}``: the email
    label: str


BARE = Rung("bare", "/send-notification/{e}/bare", "bare (no task)")
ROUTE = Rung("default", "/send-notification/{e}", "the route as it is")
# An experiment route of the ladder: POST /capacity/<rung>/{email}.
RUNG_PATH = re.compile(r"^/capacity/(?P<name>[\w-]+)/\{email\}$")
# The reference rungs, where a ladder has them.
SENT_EVENT = "{}_send_sent_event"


def ladder(document: Mapping[str, Any]) -> list[Rung]:
    """An API's ladder, from its OpenAPI document: bare, its capacity rungs in the
    order it declares them (each labelled with its description), the route."""
    rungs = [BARE]
    for path, operations in document.get("paths", {}).items():
        found = RUNG_PATH.match(path)
        if found is None or "post" not in operations:
            continue
        name = found["name"]
        label = operations["post"].get("description", "").strip().rstrip(".") or name
        rungs.append(Rung(name, f"/capacity/{name}/{{e}}", label))
    return [*rungs, ROUTE]


def sent_event_setting(impl: Implementation) -> str | None:
    """The implementation's sent-event switch, if its settings have one."""
    name = SENT_EVENT.format(impl.value)
    return name if name in Settings.model_fields else None


def uses_the_stack_broker(impl: Implementation) -> bool:
    return "broker" in IMPLEMENTATIONS[impl].needs


def purger(impl: Implementation) -> Callable[[Settings], None] | None:
    """What empties the queues an implementation's rungs and route fill (no worker
    drains them): its experiment routes' ``purge``; None: nothing waits anywhere."""
    module_name = f"{IMPLEMENTATIONS[impl].package}.experiment_routes"
    if IMPLEMENTATIONS[impl].delivery == Delivery.in_process:
        return None
    if importlib.util.find_spec(module_name) is None:
        return None
    found: Callable[[Settings], None] | None = getattr(
        importlib.import_module(module_name), "purge", None
    )
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    add_implementations_argument(parser, tuple(IMPLEMENTATIONS), "whose APIs to measure")
    parser.add_argument("--concurrency", type=int, nargs="+", help="closed-loop connections")
    parser.add_argument("--seconds", type=float, help="one slice of one rung (2.0)")
    parser.add_argument("--rounds", type=int, help="slices per rung, interleaved (3)")
    parser.add_argument("--processes", type=int, nargs="+", help="uvicorn processes (1 2)")
    parser.add_argument(
        "--broker",
        choices=("redis", "rabbitmq", "both"),
        default="both",
        help="the broker of the implementations that take the stack's",
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


def _drain(target: Target, service: str, timeout: float = 60.0) -> float:
    """Until the service's processes are idle (its backlog of work done): how long
    that took. An API that holds its tasks answers before it works, so a slice's
    tasks may still run after its last answer; they are its cost, not the next
    slice's."""
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
    target: Target, impl: Implementation, path: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    api = API[impl]
    # The API's CPU from the moment the counted window opens (after the warm-up).
    readings: list[float | None] = []
    s = asyncio.run(
        closed_loop(
            target.url(impl),
            path,
            concurrency=concurrency,
            seconds=seconds,
            on_counting=lambda: readings.append(_cpu(target, api)),
        )
    )
    before = readings[0] if readings else None
    # An API that holds its tasks also does the work: the slice lasts until it is done.
    in_process = IMPLEMENTATIONS[impl].delivery == Delivery.in_process
    drained = _drain(target, api) if in_process else 0.0
    after = _cpu(target, api)
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


def _ladders(
    target: Target,
    ladders: Mapping[Implementation, Sequence[Rung]],
    levels: list[int],
    rounds: int,
    seconds: float,
    label: str,
) -> dict[Implementation, dict[str, dict[str, dict[str, Any]]]]:
    """Every implementation's rungs, interleaved: level -> rung -> its summary, per
    implementation."""
    purgers = {impl: purger(impl) for impl in ladders}
    todo = [(impl, rung) for impl, rungs in ladders.items() for rung in rungs]
    out: dict[Implementation, dict[str, dict[str, dict[str, Any]]]] = {i: {} for i in ladders}
    progress = Progress(label, len(levels) * rounds * len(todo))
    for c in levels:
        slices: dict[tuple[Implementation, str], list[dict[str, Any]]] = {
            (impl, rung.name): [] for impl, rung in todo
        }
        for _ in range(rounds):
            for impl, rung in todo:
                path = rung.path.format(e=EMAIL)
                slices[(impl, rung.name)].append(_slice(target, impl, path, c, seconds))
                progress.advance()
                empty = purgers[impl]
                if empty is not None:
                    empty(target.settings)
        for impl, rungs in ladders.items():
            out[impl][str(c)] = {r.name: _summarize(slices[(impl, r.name)]) for r in rungs}
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


def _cross_check(
    target: Target,
    impls: Sequence[Implementation],
    measured: Mapping[Implementation, dict[str, dict[str, dict[str, Any]]]],
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """wrk against one route: the first implementation that hands over to a broker."""
    brokered = [i for i in impls if IMPLEMENTATIONS[i].delivery == Delivery.broker]
    impl = (brokered or list(impls))[0]
    ours = measured[impl][str(concurrency)][ROUTE.name]["per_s"]
    theirs = _wrk(target.url(impl) + ROUTE.path.format(e=EMAIL), concurrency, seconds)
    empty = purger(impl)
    if empty is not None:
        empty(target.settings)
    return {
        "implementation": impl.value,
        "rung": ROUTE.name,
        "concurrency": concurrency,
        "ours_per_s": ours,
        "wrk_per_s": theirs,
        "wrk_over_ours": ratio(theirs, ours) if theirs else None,
    }


def measure(args: argparse.Namespace, where: Where) -> CapacityResult:
    quick = args.quick
    selected: tuple[Implementation, ...] = args.implementations
    levels = args.concurrency or ([4] if quick else [1, 8, 32])
    seconds = args.seconds or (0.5 if quick else 2.0)
    rounds = args.rounds or (1 if quick else 3)
    processes = args.processes or ([1] if quick else [1, 2])
    brokers = ["redis", "rabbitmq"] if args.broker == "both" else [args.broker]
    config = {
        "implementations": [i.value for i in selected],
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
        # A further broker changes only the implementations that take the stack's.
        here = [i for i in selected if broker == brokers[0] or uses_the_stack_broker(i)]
        switchable = [i for i in here if sent_event_setting(i)]
        # Each one's sent events as the setting's default has them, and (on one
        # process) the other way: the ladder compares like with like.
        variants = [(p, False) for p in processes]
        if switchable and not quick:
            variants.append((processes[0], True))
        for p, switched in variants:
            impls = switchable if switched else here
            if not impls:
                continue
            needs = ("broker",) if any(uses_the_stack_broker(i) for i in impls) else ()
            spec = StackSpec(
                ("redis", *needs, *(API[i] for i in impls)),
                settings=settings,
                broker=broker,
                api_processes=p,
            )
            with open_stack(where, spec, label=f"capacity-{broker}") as target:
                events: dict[Implementation, bool] = {}
                for impl in impls:
                    setting = sent_event_setting(impl)
                    if setting is None:
                        continue
                    events[impl] = bool(getattr(target.settings_for(API[impl]), setting))
                    if switched:
                        events[impl] = not events[impl]
                        target.reconfigure(API[impl], **{setting: events[impl]})
                rungs = {impl: ladder(openapi(target.url(impl))) for impl in impls}
                say(
                    f"capacity: {broker}, {p} process(es) per API"
                    + (", sent events switched" if switched else "")
                    + f": {', '.join(impls)}"
                )
                measured = _ladders(
                    target, rungs, levels, rounds, seconds, f"capacity {broker} {p}p"
                )
                if cross_check is None and p == 1 and broker == "redis":
                    wrk_seconds = max(seconds * rounds, 3.0)
                    cross_check = _cross_check(target, impls, measured, levels[-1], wrk_seconds)
            ladders: list[dict[str, Any]] = [
                {
                    "implementation": impl.value,
                    "title": IMPLEMENTATIONS[impl].title,
                    "broker": broker if uses_the_stack_broker(impl) else None,
                    "sent_events": events.get(impl),
                    "rungs": {r.name: r.label for r in rungs[impl]},
                    "levels": measured[impl],
                }
                for impl in impls
            ]
            errors += sum(
                r["errors"] for lad in ladders for lv in lad["levels"].values() for r in lv.values()
            )
            runs.append(
                {"broker": broker, "processes": p, "switched": switched, "ladders": ladders}
            )
    return CapacityResult(config, runs, cross_check, errors, where.kind)


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
