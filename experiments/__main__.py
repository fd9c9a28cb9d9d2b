"""``python -m experiments <name> [flags]``: one command per experiment or tool.

A command's module is imported only when that command runs: ``--help`` and
``dev`` load nothing heavy (matplotlib is imported only where a chart is drawn).
Each command module has ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

# name -> (module, one-line help).
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "crash": ("experiments.crash.cli", "kill servers mid-task: loss vs retry, both sides"),
    "latency": ("experiments.perf.latency", "response time: bare, inline, BackgroundTasks, Celery"),
    "dispatch": ("experiments.perf.dispatch", "cost of one Celery publish vs a raw broker write"),
    "throughput": ("experiments.perf.throughput", "1,000 short tasks, first dispatch to last done"),
    "loop-lag": ("experiments.perf.loop_lag", "event-loop lag while each kind of task runs"),
    "threadpool": ("experiments.perf.threadpool", "sync tasks vs AnyIO's 40 thread-pool tokens"),
    "footprint": ("experiments.perf.footprint", "resident memory of each side's processes"),
    "idempotency": ("experiments.perf.idempotency", "tasks/s with an empty log vs a 1M-line one"),
    "heavy": ("experiments.perf.heavy", "CPU-bound tasks: what they do to the scheduling API"),
    "scale": ("experiments.perf.scale", "I/O-bound throughput against the number of processes"),
}
EXPERIMENTS["soak"] = ("experiments.soak", "traffic to both sides while faults keep coming")
TOOLS: dict[str, tuple[str, str]] = {
    "lab": ("experiments.lab.cli", "the live comparison page"),
    "dev": ("experiments.dev", "run every service as a local process (no Docker)"),
    "docs": ("experiments.reporting.docs", "regenerate docs/ tables from reports/*.json"),
}
# "all": every measuring experiment in turn, into one reports directory.
ALL_ORDER = [
    "latency",
    "dispatch",
    "throughput",
    "idempotency",
    "loop-lag",
    "threadpool",
    "footprint",
    "heavy",
    "scale",
    "crash",
]
COMMANDS = {**EXPERIMENTS, **TOOLS}


def _top_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {n:<{width}}{h}" for n, (_, h) in {**COMMANDS}.items())
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description=__doc__,
        epilog=f"commands:\n{listing}\n  {'all':<{width}}every experiment above, in turn\n\n"
        "python -m experiments NAME --help: that command's flags",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("name", metavar="NAME", choices=[*COMMANDS, "all"], help="the command")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def command_parser(name: str) -> tuple[argparse.ArgumentParser, ModuleType]:
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"python -m experiments {name}", description=help_)
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    top = _top_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if top.name == "all":
        p = argparse.ArgumentParser(prog="python -m experiments all")
        p.add_argument("--quick", action="store_true", help="tiny sizes (what the tests use)")
        p.add_argument("--reports-dir", default=None, help="where the reports go")
        opts = p.parse_args(top.rest)
        status = 0
        for name in ALL_ORDER:
            parser, module = command_parser(name)
            extra = ["--quick"] if opts.quick else []
            extra += ["--reports-dir", opts.reports_dir] if opts.reports_dir else []
            print(f"\n=== {name}", flush=True)
            status |= int(module.run(parser.parse_args(extra)))
        return status
    parser, module = command_parser(top.name)
    return int(module.run(parser.parse_args(top.rest)))


if __name__ == "__main__":
    sys.exit(main())
