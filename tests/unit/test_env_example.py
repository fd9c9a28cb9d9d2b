"""``.env.example`` documents every setting, with the defaults compose and the
Procfile use (a pure check of three files)."""

from __future__ import annotations

import re

import pytest

from harness.procs import REPO_ROOT
from shared.settings import Settings

DEFAULT = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")


def env_example() -> tuple[dict[str, str], set[str]]:
    """(active KEY=value lines, names of the commented-out ``# KEY=value`` lines)."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in (REPO_ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            active[m[1]] = m[2]
        elif m := re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=.*", line):
            commented.add(m[1])
    return active, commented


@pytest.mark.parametrize("path", ["docker-compose.yml", "docker-compose.rabbitmq.yml", "Procfile"])
def test_env_example_has_the_same_defaults(path: str) -> None:
    active, _ = env_example()
    defaults = DEFAULT.findall((REPO_ROOT / path).read_text(encoding="utf-8"))
    assert defaults
    for name, value in defaults:
        if name in ("COMPOSE_PROJECT_NAME", "DEV_STATE_DIR"):
            continue
        assert active.get(name) == value, f"{path}: ${{{name}:-{value}}} vs .env.example"


def test_env_example_documents_every_setting() -> None:
    active, commented = env_example()
    missing = {name.upper() for name in Settings.model_fields} - set(active) - commented
    assert not missing, f"not in .env.example: {sorted(missing)}"
