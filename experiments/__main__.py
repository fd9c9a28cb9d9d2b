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
from typing import NamedTuple


class Command(NamedTuple):
    module: str
    help: str
    # Part of ``all`` (every measuring experiment, in this table's order).
    measures: bool = True
    # The module whose ``render(data)`` draws its ``reports/<name>.json`` (None: it
    # writes no report); the command's own module unless named.
    report: str | None = ""

    def renderer(self) -> str | None:
        return self.module if self.report == "" else self.report


# Every command, registered once: its module, its help, whether ``all`` runs it.
COMMANDS: dict[str, Command] = {
    "latency": Command(
        "experiments.perf.latency",
        "response time of each implementation's route against its bare one",
        report="experiments.reporting.latency",
    ),
    "dispatch": Command(
        "experiments.perf.dispatch",
        "cost of one publish to a broker vs a raw broker write",
        report="experiments.reporting.dispatch",
    ),
    "throughput": Command(
        "experiments.perf.throughput",
        "1,000 short tasks, first dispatch to last done",
        report="experiments.reporting.throughput",
    ),
    "idempotency": Command(
        "experiments.perf.idempotency",
        "tasks/s with an empty log vs a 1M-line one",
        report="experiments.reporting.idempotency",
    ),
    "loop-lag": Command(
        "experiments.perf.loop_lag",
        "event-loop lag while each kind of task runs",
        report="experiments.reporting.loop_lag",
    ),
    "threadpool": Command(
        "experiments.perf.threadpool",
        "sync tasks vs AnyIO's 40 thread-pool tokens",
        report="experiments.reporting.threadpool",
    ),
    "footprint": Command(
        "experiments.perf.footprint",
        "resident memory of each implementation's processes",
        report="experiments.reporting.footprint",
    ),
    "heavy": Command(
        "experiments.perf.heavy",
        "CPU-bound tasks: what they do to the scheduling API",
        report="experiments.reporting.heavy",
    ),
    "scale": Command(
        "experiments.perf.scale",
        "I/O-bound throughput against the number of processes",
        report="experiments.reporting.scale",
    ),
    "capacity": Command(
        "experiments.perf.capacity",
        "req/s each API takes at saturation, rung by rung",
        report="experiments.reporting.capacity",
    ),
    "crash": Command(
        "experiments.crash.cli",
        "kill servers mid-task: what each implementation loses",
        report="experiments.reporting.crash",
    ),
    # Minutes long: run on its own.
    "soak": Command(
        "experiments.soak",
        "traffic to every implementation while faults keep coming",
        False,
        "experiments.reporting.soak",
    ),
    "lab": Command("lab.cli", "the live comparison page (the lab/ web app)", False, None),
    "dev": Command("harness.dev", "run every service as a local process (no Docker)", False, None),
    "docs": Command(
        "experiments.reporting.docs", "regenerate docs/ tables from reports/*.json", False, None
    ),
}
ALL_ORDER = [name for name, command in COMMANDS.items() if command.measures]


def _top_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS)) + 2
    listing = "\n".join(f"  {n:<{width}}{c.help}" for n, c in COMMANDS.items())
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
    command = COMMANDS[name]
    module = importlib.import_module(command.module)
    parser = argparse.ArgumentParser(prog=f"python -m experiments {name}", description=command.help)
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
