"""Idempotency's cost against the size of the log: ``POST /items/`` tasks per
second with an empty ``LOG_FILE`` and with one of a million lines, for each
implementation declared in ``shared.services`` (``--implementations``).

Every task checks "was my line already written?" before it writes. That check
reads one marker file and a few bytes of the log (``shared/work.py``), so a long
log must not slow it down: the target is the million-line log at ≥ 0.9× the
empty one's tasks per second.

Local only: the log, a file of the stack's own, is filled before the first request
(compose keeps it in a volume). The million lines are other tasks' lines; their markers are not made
(only a new task's own marker is ever looked up).
"""

from __future__ import annotations

import argparse
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.common import add_implementations_argument, say
from experiments.perf import base
from experiments.perf.throughput import span
from experiments.reporting.idempotency import chart, render
from experiments.stats import ratio
from harness.stacks import StackSpec, Where, open_stack
from harness.target import Unsupported
from shared.services import IMPLEMENTATIONS

NAME = "idempotency"
TARGET = 0.9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    add_implementations_argument(parser, tuple(IMPLEMENTATIONS), "whose tasks to measure")
    parser.add_argument("--tasks", type=int, help="tasks per measurement (1000)")
    parser.add_argument("--lines", type=int, help="lines in the long log (1000000)")
    parser.add_argument("--concurrency", type=int, default=8, help="HTTP clients (8)")


def fill(path: Path, lines: int) -> None:
    """``lines`` lines as ``shared.work`` writes them, for other tasks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        batch = []
        for i in range(lines):
            batch.append(f"2026-01-01T00:00:00.000+00:00 [{uuid.uuid4()}] item created: old {i}\n")
            if len(batch) == 10_000:
                f.writelines(batch)
                batch.clear()
        f.writelines(batch)
        # On disk before the measurement: a long-lived log was written long ago, and
        # the page cache's writeback of 90 MB must not compete with the run.
        f.flush()
        os.fsync(f.fileno())


@dataclass
class IdempotencyResult:
    config: dict[str, Any]
    runs: dict[str, dict[str, dict[str, Any]]]
    ratios: dict[str, float]
    targets: list[dict[str, Any]]
    target: str

    @property
    def ok(self) -> bool:
        return all(
            r["finished"] == r["tasks"] for side in self.runs.values() for r in side.values()
        )


def measure(args: argparse.Namespace, where: Where) -> IdempotencyResult:
    if where.kind != "local":
        raise Unsupported("idempotency fills the log before the stack starts: local target only")
    n = args.tasks or (60 if args.quick else 1000)
    big = args.lines if args.lines is not None else (20_000 if args.quick else 1_000_000)
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for impl in args.implementations:
        side = impl.value
        runs[side] = {}
        for lines in (0, big):
            label = f"{side}, {lines:,} lines"
            say(f"idempotency: {label}, {n} tasks")
            with open_stack(where, StackSpec.for_implementation(impl), label=NAME) as target:
                log = Path(target.settings.log_file)
                fill(log, lines)
                size = log.stat().st_size
                runs[side][str(lines)] = {
                    **span(target, side, n, args.concurrency, label),
                    "log_lines_before": lines,
                    "log_bytes_before": size,
                }
    ratios = {
        side: ratio(runs[side][str(big)]["tasks_per_s"], runs[side]["0"]["tasks_per_s"])
        for side in runs
    }
    return IdempotencyResult(
        config={
            "implementations": list(runs),
            "tasks": n,
            "lines": big,
            "http_concurrency": args.concurrency,
        },
        runs=runs,
        ratios=ratios,
        targets=[
            {
                "target": f"{side}: tasks/s with a {big:,}-line log ≥ {TARGET}× with an empty one",
                "measured": r,
                "met": r >= TARGET,
            }
            for side, r in ratios.items()
        ],
        target=where.kind,
    )


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
