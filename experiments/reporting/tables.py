"""Markdown tables: the one formatter every report and generated doc uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return "—"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if v is None:
        return "—"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def targets_table(targets: Sequence[dict[str, Any]]) -> str:
    """An experiment's targets: what was aimed for, the number measured, met or not."""
    return markdown_table(
        ["target", "measured", "met"],
        [[t["target"], t["measured"], "yes" if t["met"] else "no"] for t in targets],
    )
