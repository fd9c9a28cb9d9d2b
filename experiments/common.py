"""What every command shares: choosing the target, progress lines, the machine's load.

(The statistics are in ``experiments.stats``: standard library only.)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.stacks import Where
from shared.services import IMPLEMENTATIONS, SERVICES, Implementation


def add_target_arguments(parser: argparse.ArgumentParser, *, reports: bool = True) -> None:
    """--target and how to reach it: the same flags on every command."""
    parser.add_argument(
        "--target",
        choices=("local", "compose"),
        default="local",
        help="local: start its own processes on free ports (default); "
        "compose: use a running `docker compose` project (its own settings apply)",
    )
    group = parser.add_argument_group("where it runs")
    group.add_argument("--workdir", type=Path, default=None, help="local: where runs' files go")
    group.add_argument("--keep", action="store_true", help="local: keep each run's files")
    group.add_argument("--compose-project", default=None, help="compose: the project name (-p)")
    group.add_argument(
        "--compose-file", action="append", default=[], help="compose: a compose file (-f)"
    )
    group.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="SERVICE=URL",
        help="compose: where a service answers, when not on its published port "
        f"(repeatable; services: {', '.join(PUBLISHED)})",
    )
    if reports:
        parser.add_argument(
            "--reports-dir",
            type=Path,
            default=None,
            help="where to write the report (default: $REPORTS_DIR or reports/)",
        )


def where_from(args: argparse.Namespace) -> Where:
    return Where(
        kind=args.target,
        workdir=args.workdir,
        keep=args.keep,
        project=args.compose_project,
        files=tuple(args.compose_file),
        urls=urls_from(args.url),
    )


# The services a URL can be given for: those that publish a port.
PUBLISHED = tuple(name for name, s in SERVICES.items() if s.port and s.python)


def urls_from(given: Sequence[str]) -> dict[str, str]:
    """``--url SERVICE=URL`` flags as a mapping; a clear error for a bad one."""
    urls = {}
    for item in given:
        service, sep, url = item.partition("=")
        if not sep or service not in PUBLISHED or not url.startswith(("http://", "https://")):
            raise SystemExit(
                f"--url {item!r}: SERVICE=http://host:port, SERVICE one of {', '.join(PUBLISHED)}"
            )
        urls[service] = url
    return urls


def add_implementations_argument(
    parser: argparse.ArgumentParser, default: Sequence[Implementation], what: str
) -> None:
    """--implementations: the declared implementations to run, comma-separated."""
    parser.add_argument(
        "--implementations",
        type=implementations_from,
        default=tuple(default),
        help=f"{what}, comma-separated (default: {','.join(default)}; "
        f"declared: {','.join(IMPLEMENTATIONS)})",
    )


def implementations_from(text: str) -> tuple[Implementation, ...]:
    """ "bg,taskiq" as declared implementations, in the order given."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in IMPLEMENTATIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'none given'}: declared are {', '.join(IMPLEMENTATIONS)}"
        )
    return tuple(dict.fromkeys(Implementation(n) for n in names))


def say(message: str) -> None:
    """Progress for the person running it: on stderr, line by line."""
    print(message, file=sys.stderr, flush=True)


class Progress:
    """One line per step on a terminal (``\\r``), at 0, 50 and 100 % otherwise (CI logs)."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.tty = sys.stderr.isatty()
        self._last_decile = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.tty:
            print(f"\r  {self.label}: {self.done}/{self.total}", end="", file=sys.stderr)
            return
        decile = self.done * 10 // self.total
        if decile != self._last_decile and decile in (0, 5, 10):
            self._last_decile = decile
            print(f"  {self.label}: {self.done}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def conditions() -> dict[str, Any]:
    """How busy the machine was when the run started (the numbers depend on it)."""
    load1, load5, _ = os.getloadavg()
    return {"loadavg_1m": round(load1, 2), "loadavg_5m": round(load5, 2), "cpus": os.cpu_count()}
