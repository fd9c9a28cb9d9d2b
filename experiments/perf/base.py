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
