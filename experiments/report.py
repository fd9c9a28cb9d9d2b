"""Writing results: JSON + a markdown table (+ PNG charts) into ``reports/``,
each stamped with the machine and the versions that produced it."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

REPORTS = Path(os.environ.get("REPORTS_DIR", "reports"))


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("fastapi", "starlette", "uvicorn", "celery", "kombu", "redis", "anyio"):
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
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write(
    name: str,
    data: dict[str, Any],
    table: str,
    *,
    directory: Path | None = None,
    notes: str = "",
) -> Path:
    """Write ``<name>.json`` and ``<name>.md``; return the markdown path."""
    out = directory or REPORTS
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    (out / f"{name}.json").write_text(
        json.dumps({"machine": info, **data}, indent=2, ensure_ascii=False) + "\n"
    )
    header = (
        f"Produced {info['when']} on {info['platform']}, {info['cpus']} CPUs, "
        f"Python {info['python']}; command: `python -m experiments {' '.join(sys.argv[1:])}`."
    )
    md = out / f"{name}.md"
    md.write_text(f"## {name}\n\n{header}\n\n{table}\n\n{notes}".rstrip() + "\n")
    return md
