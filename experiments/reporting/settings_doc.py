"""Every setting in one table: its name and default from ``shared.settings.Settings``,
its meaning from the comment above it in ``.env.example`` (the file a user copies),
so neither is written twice (``<!-- generated: settings -->`` in docs/)."""

from __future__ import annotations

import re
from pathlib import Path

from experiments.reporting.tables import markdown_table
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$")


def meanings(text: str) -> dict[str, str]:
    """Per variable in ``.env.example``: the comment lines right above it."""
    out: dict[str, str] = {}
    comment: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if m := LINE.match(line):
            out.setdefault(m[1], " ".join(comment))
            comment = []
            continue
        if line.startswith("# ---") or not line:
            comment = []
        elif line.startswith("#"):
            comment.append(line.lstrip("# ").strip())
    return out


def render_from(reports: Path) -> str:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    meaning = meanings(text)
    rows = []
    for name, field in Settings.model_fields.items():
        env = name.upper()
        default = field.default
        shown = "—" if default is None else f"`{default}`"
        rows.append([f"`{env}`", shown, meaning.get(env, "")])
    return markdown_table(["variable", "default (no .env)", "what it does"], rows)
