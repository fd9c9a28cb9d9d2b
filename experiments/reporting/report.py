"""Writing results: ``<name>.json`` and ``<name>.md`` into the reports directory,
each stamped with the machine and the versions that produced it."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from shared.services import IMPLEMENTATIONS

# What every run depends on, then each implementation's libraries (its declaration's).
VERSIONED = ("fastapi", "starlette", "uvicorn", "redis", "anyio", "amqp")


def libraries() -> tuple[str, ...]:
    """Every declared implementation's libraries, in the declaration's order."""
    return tuple(dict.fromkeys(lib for s in IMPLEMENTATIONS.values() for lib in s.libraries))


def reports_dir(given: Path | None = None) -> Path:
    # Read at call time (not import time), so a test can point it at a tmp dir.
    return Path(given or os.environ.get("REPORTS_DIR", "reports"))


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in dict.fromkeys((*VERSIONED, *libraries())):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
        "command": "python -m experiments " + " ".join(sys.argv[1:]),
    }


def write(name: str, data: dict[str, Any], markdown: str, *, directory: Path | None = None) -> Path:
    """Write ``<name>.json`` (the data, with the machine) and ``<name>.md``; return the .md."""
    out = reports_dir(directory)
    out.mkdir(parents=True, exist_ok=True)
    info = data.setdefault("machine", machine())
    (out / f"{name}.json").write_text(
        json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    )
    header = (
        f"Produced {info['when']} on {info['platform']}, {info['cpus']} CPUs, "
        f"Python {info['python']}; command: `{info.get('command', '')}`."
    )
    md = out / f"{name}.md"
    md.write_text(f"## {name}\n\n{header}\n\n{markdown}".rstrip() + "\n")
    return md


def publish(name: str, data: dict[str, Any], text: str, *, directory: Path | None = None) -> Path:
    """A command's report: ``text`` on stdout (the result, for the person who ran it),
    then ``write``, and where it went on stderr. Returns the .md."""
    print()
    print(text)
    path = write(name, data, text, directory=directory)
    print(f"\nwritten: {path} and {path.with_suffix('.json')}", file=sys.stderr)
    return path


def load(name: str, directory: Path | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((reports_dir(directory) / f"{name}.json").read_text())
    return data


def load_if_any(name: str, directory: Path | None = None) -> dict[str, Any] | None:
    """``load``, or None when the report was never written."""
    if not (reports_dir(directory) / f"{name}.json").exists():
        return None
    return load(name, directory)
