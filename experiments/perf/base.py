"""The skeleton every performance experiment fills in.

``measure(args, where)`` runs it and returns its typed result (a dataclass);
``render(data)`` turns the result's JSON into markdown; ``chart(data, path)``
draws it (matplotlib, imported there and nowhere at module level). ``run``
does the rest the same way for all of them: the machine's load, the report
files, the exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from experiments.common import add_target_arguments, conditions, where_from
from experiments.reporting.report import reports_dir, write
from harness.stacks import Where
from shared.services import IMPLEMENTATIONS, SERVICES, Delivery, Implementation, delivery_of


class Result(Protocol):
    @property
    def ok(self) -> bool:
        """Did the run complete (no errors, every task done)? Targets are not part of it."""
        ...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (what the tests and `all --quick` use)"
    )


@dataclass(frozen=True)
class Experiment:
    name: str
    measure: Callable[[argparse.Namespace, Where], Any]
    render: Callable[[dict[str, Any]], str]
    chart: Callable[[dict[str, Any], Path], None]

    def run(self, args: argparse.Namespace) -> int:
        # How busy the machine was as the run began: the numbers depend on it.
        before = conditions()
        result = self.measure(args, where_from(args))
        data = {**dataclasses.asdict(result), "conditions": before}
        out = reports_dir(args.reports_dir)
        write(
            self.name,
            data,
            f"![{self.name}]({self.name}.png)\n\n{self.render(data)}",
            directory=out,
        )
        self.chart(data, out / f"{self.name}.png")
        return 0 if result.ok else 1


def color(impl: str, *, lighter: float = 0.0) -> str:
    """An implementation's colour in every chart, ``lighter`` (0 to 1) towards white."""
    from matplotlib.colors import to_hex, to_rgb

    from experiments.reporting import charts

    # Those without a declared colour take the palette's free ones, in turn.
    declared = {spec.color for spec in IMPLEMENTATIONS.values() if spec.color}
    free = [c for c in charts.PALETTE if c not in {*declared, *charts.COLORS.values()}]
    others = [i for i, spec in IMPLEMENTATIONS.items() if not spec.color]
    own = IMPLEMENTATIONS[Implementation(impl)].color
    r, g, b = to_rgb(own or free[others.index(Implementation(impl)) % len(free)])
    return to_hex((r + (1 - r) * lighter, g + (1 - g) * lighter, b + (1 - b) * lighter))


# --- what "processes" buys each implementation --------------------------------------------
#
# ``StackSpec.for_implementation(impl, processes=N)`` gives N to its API's server where it
# holds its tasks in process memory, else to its worker's ``{concurrency}`` options. What
# one unit of that is follows from the declared commands (``shared.services``), which the
# reports say in words.


def worker_option(impl: Implementation | str, option: str) -> str | None:
    """The value its worker's declared local options give ``option`` (None: not given,
    or it holds its tasks in the API process)."""
    spec = IMPLEMENTATIONS[Implementation(impl)]
    if spec.delivery == Delivery.in_process:
        return None
    local = SERVICES[spec.runs_the_work].local
    return local[local.index(option) + 1] if option in local[:-1] else None


def pool_of(impl: Implementation | str) -> str | None:
    """The pool its worker runs (``--pool``), if its command names one."""
    return worker_option(impl, "--pool")


def server_of(impl: Implementation | str) -> str:
    """The program that serves its API (the declared command's first word: uvicorn)."""
    return SERVICES[IMPLEMENTATIONS[Implementation(impl)].api].command[0]


def one_task_per_process(impl: Implementation | str) -> bool:
    """Does each unit of its worker's concurrency run one task at a time, in a process of
    its own (a prefork pool)? Its API's processes run many at once each (a thread pool)."""
    return pool_of(impl) == "prefork"


def unit_of(impl: Implementation | str) -> str:
    """What one of its ``processes`` is, in words: "uvicorn workers", "prefork pool
    processes", or tasks at once (a worker whose concurrency is tasks in one process)."""
    if delivery_of(impl) == Delivery.in_process:
        return f"{server_of(impl)} workers"
    pool = pool_of(impl)
    return f"{pool} pool processes" if pool else "tasks at once"


def counts_processes(impl: Implementation | str) -> bool:
    """Is each of its ``processes`` an operating-system process?"""
    return delivery_of(impl) == Delivery.in_process or one_task_per_process(impl)


def sends_events(impl: Implementation | str) -> bool:
    """Does its worker send task events (for a monitor: ``-E``)?"""
    spec = IMPLEMENTATIONS[Implementation(impl)]
    return spec.delivery == Delivery.broker and "-E" in SERVICES[spec.runs_the_work].command


def works_apart(impl: Implementation | str) -> bool:
    """Does a service other than its API run its tasks (a worker that can be stopped
    while the API still takes them)?"""
    spec = IMPLEMENTATIONS[Implementation(impl)]
    return spec.runs_the_work != spec.api
