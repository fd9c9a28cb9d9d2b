"""The slowest tests of a ``make test`` run, across its phases:
``python -m tests.slowest test-artifacts/*.xml`` (pytest's JUnit XML: each test's
setup, call and teardown together)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TOP = 15


def durations(paths: list[Path]) -> list[tuple[float, str, str]]:
    """(seconds, phase, test id) of every test in these reports."""
    found = []
    for path in paths:
        if not path.exists():
            continue
        for case in ET.parse(path).getroot().iter("testcase"):
            test = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
            found.append((float(case.get("time") or 0), path.stem, test))
    return sorted(found, reverse=True)


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv]
    rows = durations(paths)
    print(f"== the {min(TOP, len(rows))} slowest of {len(rows)} tests (setup + call + teardown)")
    for seconds, phase, test in rows[:TOP]:
        print(f"{seconds:7.1f}s  {phase:<8}  {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
