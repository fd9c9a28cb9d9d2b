"""``python -m experiments <name>``: each experiment is a module with
``add_arguments(parser)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help). "all" runs every measuring experiment in turn.
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "crash": ("experiments.crash", "kill servers mid-task: loss vs retry, both sides"),
    "latency": ("experiments.latency", "response time: bare, inline, BackgroundTasks, Celery"),
    "dispatch": ("experiments.dispatch", "cost of one Celery publish vs a raw Redis LPUSH"),
    "throughput": ("experiments.throughput", "1,000 short tasks, first dispatch to last done"),
    "loop-lag": ("experiments.loop_lag", "event-loop lag while each kind of task runs"),
    "threadpool": ("experiments.threadpool", "sync tasks vs AnyIO's 40 thread-pool tokens"),
    "footprint": ("experiments.footprint", "resident memory of each side's processes"),
}
TOOLS: dict[str, tuple[str, str]] = {
    "lab": ("experiments.lab", "the live comparison page"),
    "dev": ("experiments.dev", "run every service as a local process (no Docker)"),
}
ALL_ORDER = ["latency", "dispatch", "throughput", "loop-lag", "threadpool", "footprint", "crash"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    modules = {}
    for name, (module, help_) in {**EXPERIMENTS, **TOOLS}.items():
        p = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(module=mod)
        modules[name] = mod
    p_all = sub.add_parser("all", help="every experiment, one report")
    p_all.add_argument("--quick", action="store_true", help="tiny sizes (what the tests use)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.name == "all":
        status = 0
        for name in ALL_ORDER:
            sub_args = sub.choices[name].parse_args(["--quick"] if args.quick else [])
            print(f"\n=== {name}", flush=True)
            status |= modules[name].run(sub_args)
        return status
    return int(args.module.run(args))


if __name__ == "__main__":
    sys.exit(main())
