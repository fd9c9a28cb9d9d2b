"""The costliest tests of a ``make test`` run, across its phases:
``python -m tests.slowest test-artifacts/*.xml`` (pytest's JUnit XML). Two rankings:
wall time (setup, call and teardown together), and the CPU seconds of the process
tree (the ``cpu_s`` property ``tests/integration/conftest.py`` records: the test's
own process and every process it started and stopped; a module's stack counts for
the test whose teardown stops it)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

TOP = 15


class Case(NamedTuple):
    seconds: float
    cpu: float | None
    phase: str
    test: str


def cases(paths: list[Path]) -> list[Case]:
    """Every test in these reports."""
    found = []
    for path in paths:
        if not path.exists():
            continue
        for case in ET.parse(path).getroot().iter("testcase"):
            test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            cpu = next(
                (
                    float(p.get("value") or 0)
                    for p in case.iter("property")
                    if p.get("name") == "cpu_s"
                ),
                None,
            )
            found.append(Case(float(case.get("time") or 0), cpu, path.stem, test))
    return found


def main(argv: list[str]) -> int:
    rows = cases([Path(a) for a in argv])
    print(f"== the {min(TOP, len(rows))} slowest of {len(rows)} tests (setup + call + teardown)")
    for c in sorted(rows, key=lambda c: c.seconds, reverse=True)[:TOP]:
        print(f"{c.seconds:7.1f}s  {c.phase:<8}  {c.test}")
    measured = [c for c in rows if c.cpu is not None]
    if measured:
        total = sum(c.cpu or 0 for c in measured)
        top = min(TOP, len(measured))
        print(f"== the {top} costliest in CPU (process tree; {total:.0f} s in all)")
        for c in sorted(measured, key=lambda c: c.cpu or 0, reverse=True)[:TOP]:
            print(f"{c.cpu:7.1f}s  {c.phase:<8}  {c.test}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
