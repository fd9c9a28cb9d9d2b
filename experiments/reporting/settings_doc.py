"""Every setting in one table: its name and default from ``shared.settings.Settings``,
its meaning from the comment above it in ``.env.example`` (the file a user copies),
so neither is written twice (``<!-- generated: settings -->`` in docs/)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from experiments.reporting.tables import markdown_table
from harness.procs import REPO_ROOT
from shared.settings import Settings

ENV_EXAMPLE = REPO_ROOT / ".env.example"
LINE = re.compile(r"^(# )?([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class Entry:
    """One variable of ``.env.example``."""

    value: str
    active: bool  # False: a commented-out "# KEY=value" line, for the user to enable
    meaning: str  # the comment lines right above it


def entries(text: str) -> dict[str, Entry]:
    """Every variable in ``.env.example`` (its first line, if it has two)."""
    out: dict[str, Entry] = {}
    comment: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if m := LINE.match(line):
            out.setdefault(m[2], Entry(m[3], m[1] is None, " ".join(comment)))
            comment = []
            continue
        if line.startswith("# ---") or not line:
            comment = []
        elif line.startswith("#"):
            comment.append(line.lstrip("# ").strip())
    return out


def render_from(reports: Path) -> str:
    found = entries(ENV_EXAMPLE.read_text(encoding="utf-8"))
    rows = []
    for name, field in Settings.model_fields.items():
        env = name.upper()
        default = field.default
        shown = "—" if default is None else f"`{default}`"
        rows.append([f"`{env}`", shown, found[env].meaning if env in found else ""])
    return markdown_table(["variable", "default (no .env)", "what it does"], rows)
