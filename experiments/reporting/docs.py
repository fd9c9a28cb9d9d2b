"""``python -m experiments docs``: the measured tables in docs/, from reports/*.json.

Every table in docs/ that shows a measurement sits between two markers::

    <!-- generated: latency -->
    ...
    <!-- /generated -->

and is rendered from the committed reference run (``reports/<name>.json``) by
the same function that wrote that experiment's own report. ``--check`` changes
nothing and fails when a committed doc differs from what its data renders (the
test suite runs it), so a table can never drift from its data. ``--charts``
also redraws docs/img/*.png from the same JSON.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.__main__ import COMMANDS
from experiments.reporting import crash, report
from experiments.reporting.report import load, reports_dir
from shared.services import IMPLEMENTATIONS, Implementation

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

# region name -> the module whose render(data) draws it from reports/<name>.json:
# every command that writes a report (``experiments.__main__.COMMANDS``).
RENDERERS: dict[str, str] = {
    name: module for name, command in COMMANDS.items() if (module := command.renderer())
}
# region name -> the module whose render_from(reports_dir) draws it from several
# reports, or from the code itself (no provenance line of one run).
COMPOSITE: dict[str, str] = {
    "brokers": "experiments.reporting.brokers",
    "decision": "experiments.reporting.decision",
    "machine-lost": "experiments.reporting.machine_lost",
    "queues": "experiments.reporting.queues",
    "settings": "experiments.reporting.settings_doc",
}

REGION = re.compile(
    r"(?P<open><!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /generated -->)",
    re.S,
)


def provenance(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    v = m.get("versions", {})
    versions = ", ".join(f"{k} {v[k]}" for k in report.libraries() if v.get(k))
    return (
        f"*Measured {m.get('when', '?')} on {m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, "
        f"Python {m.get('python', '?')} ({versions}); `{m.get('command', '')}`.*"
    )


def renderer(name: str) -> Callable[[dict[str, Any]], str]:
    module = importlib.import_module(RENDERERS[name])
    render: Callable[[dict[str, Any]], str] = module.render
    return render


# "crash-of-<implementation>": that implementation's rows of the crash table (its page's).
CRASH_OF = "crash-of-"


def known(name: str) -> bool:
    """A region this module can draw."""
    impl = name.removeprefix(CRASH_OF)
    return name in RENDERERS or name in COMPOSITE or (name != impl and impl in IMPLEMENTATIONS)


def region(name: str, reports: Path) -> str:
    """The body of one generated region."""
    if name.startswith(CRASH_OF) and known(name):
        data = load("crash", reports)
        rows = crash.table_of(data, Implementation(name.removeprefix(CRASH_OF)))
        return f"{provenance(data)}\n\n{rows}\n"
    if name in COMPOSITE:
        body: str = importlib.import_module(COMPOSITE[name]).render_from(reports)
        return body.strip() + "\n"
    if name not in RENDERERS:
        raise KeyError(f"no renderer for generated region {name!r}")
    data = load(name, reports)
    return f"{provenance(data)}\n\n{renderer(name)(data).strip()}\n"


def generate(text: str, reports: Path) -> str:
    """``text`` with every generated region redrawn from its report."""

    def redraw(m: re.Match[str]) -> str:
        return f"{m['open']}{region(m['name'], reports)}{m['close']}"

    return REGION.sub(redraw, text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a doc is out of date"
    )
    parser.add_argument("--charts", action="store_true", help="also redraw docs/img/*.png")
    parser.add_argument(
        "--reports-dir", type=Path, default=None, help="the reports to draw from (reports/)"
    )
    parser.add_argument("--docs-dir", type=Path, default=DOCS, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    reports = reports_dir(args.reports_dir)
    if not reports.is_absolute():
        reports = REPO / reports
    stale = []
    for path in [args.docs_dir.parent / "README.md", *sorted(args.docs_dir.glob("*.md"))]:
        old = path.read_text(encoding="utf-8")
        new = generate(old, reports)
        if new != old:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.charts and not args.check:
        for name, module_name in RENDERERS.items():
            module = importlib.import_module(module_name)
            if hasattr(module, "chart") and (reports / f"{name}.json").exists():
                module.chart(load(name, reports), args.docs_dir / "img" / f"{name}.png")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(REPO)) for p in stale)
        print(f"docs out of date with reports/*.json: {names}; run python -m experiments docs")
        return 1
    for path in stale:
        print(f"docs: rewrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0
