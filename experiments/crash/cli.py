"""``python -m experiments crash`` (``make crash``): every scenario, one table."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace

from experiments.common import add_implementations_argument, add_target_arguments, where_from
from experiments.crash.outcome import Say
from experiments.crash.runner import adapt, run_scenario
from experiments.crash.scenarios import BY_KEY, SCENARIOS, Params, Scenario, pick
from experiments.reporting import crash as report
from experiments.reporting.report import load_if_any, publish
from harness.stacks import BROKER_VARIANTS, variant_of
from shared.services import IMPLEMENTATIONS

NAME = "crash"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Params()
    add_target_arguments(parser)
    parser.add_argument(
        "--scenarios",
        default="all",
        help="comma-separated keys (default all): " + ", ".join(s.key for s in SCENARIOS),
    )
    add_implementations_argument(parser, tuple(IMPLEMENTATIONS), "whose scenarios to run")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the report's rows of the scenarios not run (each row says when it ran)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--broker",
        choices=(*BROKER_VARIANTS, "all"),
        default=None,
        help="the broker (rabbitmq: a quorum queue; rabbitmq-classic: a classic one): every "
        "scenario of an implementation that needs one runs on each (default: all three "
        "locally; a compose stack's own broker)",
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=d.tasks,
        help=f"notification requests per scenario, 2 tasks each (default {d.tasks})",
    )
    parser.add_argument(
        "--delay", type=float, default=d.delay, help=f"NOTIFICATION_DELAY_SECONDS ({d.delay:g})"
    )
    parser.add_argument(
        "--visibility-timeout",
        type=float,
        default=d.visibility,
        help="the horizon: a dead worker's task comes back this long after its delivery, "
        f"each implementation's declared setting (default {d.visibility:g})",
    )
    parser.add_argument(
        "--restore-interval",
        type=float,
        default=d.restore_interval,
        help="how often the horizon is checked, where a scan does it "
        f"(default {d.restore_interval:g})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=d.concurrency,
        help=f"worker processes, or a worker's task slots (default {d.concurrency})",
    )
    parser.add_argument(
        "--grace",
        type=int,
        default=d.grace,
        help=f"the short graceful-shutdown timeout, whole seconds (default {d.grace})",
    )
    parser.add_argument(
        "--loop-window",
        type=float,
        default=d.loop_window,
        help=f"how long a crash loop is watched, seconds (default {d.loop_window:g})",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument(
        "--json", action="store_true", help="also print the results as JSON on stdout"
    )


def params_from(args: argparse.Namespace) -> Params:
    params = Params(
        tasks=args.tasks,
        delay=args.delay,
        visibility=args.visibility_timeout,
        restore_interval=args.restore_interval,
        concurrency=args.concurrency,
        grace=args.grace,
        loop_window=args.loop_window,
    )
    if args.quick:
        params = replace(params, tasks=2, delay=1.5, visibility=3.0)
    return params


def _progress(total: int) -> Callable[[int, Scenario], Say]:
    """Plain lines on stderr: one per step, prefixed with the scenario and the clock."""
    started = time.monotonic()

    def for_scenario(i: int, sc: Scenario) -> Say:
        def say(msg: str) -> None:
            elapsed = time.monotonic() - started
            print(f"[{i}/{total} {elapsed:5.0f}s] {sc.label}: {msg}", file=sys.stderr, flush=True)

        return say

    return for_scenario


def run(args: argparse.Namespace) -> int:
    if args.list:
        for s in pick("all", args.implementations):
            on = f" [{', '.join(s.brokers)}]" if s.on_brokers else ""
            print(f"{s.key:<31} {s.title}{on}: {s.expected}")
        return 0
    params = params_from(args)
    try:
        scenarios = pick(args.scenarios, args.implementations)
    except ValueError as exc:
        print(f"crash: {exc}", file=sys.stderr)
        return 2
    where = where_from(args)
    brokers = list(BROKER_VARIANTS) if args.broker in (None, "all") else [args.broker]
    if where.kind == "compose":
        try:
            stack = where.attach()
            params = adapt(params, stack)
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            print(f"crash: cannot read the compose stack's settings: {exc}", file=sys.stderr)
            return 2
        if args.broker is None:
            brokers = [variant_of(stack.settings)]
        print(
            f"crash: compose: the stack's own settings apply (delay {params.delay:g}s, "
            f"visibility timeout {params.visibility:g}s, scan every "
            f"{params.restore_interval:g}s, concurrency {params.concurrency}); "
            "set them when you bring the stack up (NOTIFICATION_DELAY_SECONDS, ...)",
            file=sys.stderr,
        )
    problems = params.problems()
    previous = load_if_any(NAME, args.reports_dir) if args.merge else None
    if previous is not None and previous.get("params") != asdict(params):
        problems.append(
            f"--merge: reports/{NAME}.json was measured with other parameters "
            f"({previous.get('params')}); its rows and these cannot share a table"
        )
    if problems:
        for problem in problems:
            print(f"crash: {problem}", file=sys.stderr)
        return 2

    # Once, or once per broker where the implementation needs one.
    runs = [
        (sc, broker)
        for sc in scenarios
        for broker in (brokers if sc.on_brokers else ["redis"])
        if not sc.on_brokers or broker in sc.brokers
    ]
    progress = _progress(len(runs))
    outcomes = []
    for i, (sc, broker) in enumerate(runs, 1):
        say = progress(i, sc)
        on = f" on {broker}" if sc.on_brokers else ""
        say(f"starting{on} — expected: {sc.expected}")
        outcomes.append(run_scenario(sc, params, where, say, broker=broker))

    data = {
        "target": where.kind,
        "brokers": brokers,
        "params": asdict(params),
        "scenarios": [o.to_dict() for o in outcomes],
    }
    if previous is not None:
        brokers_of = {k: s.brokers if s.on_brokers else ("",) for k, s in BY_KEY.items()}
        data = report.merge(previous, data, order=list(BY_KEY), brokers_of=brokers_of)
    publish(NAME, data, report.render(data), directory=args.reports_dir)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    return 1 if any(o.status == "error" for o in outcomes) else 0
