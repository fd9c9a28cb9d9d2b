"""``.env.example`` documents every setting, with the defaults compose and the
Procfile use (a pure check of three files)."""

from __future__ import annotations

import re

import pytest

from experiments.reporting.settings_doc import ENV_EXAMPLE, entries
from shared.settings import PLACEHOLDER, Settings
from tests.unit.conftest import REPO

# Compose's interpolation; ``$${...}`` is an escaped ``$`` (a script's own variable).
DEFAULT = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")
# Secrets are left empty in .env.example (a copied .env must not carry a password
# that looks chosen); compose's ``${NAME:-change-me}`` gives the development
# default for an empty value too, and production refuses that default.
SECRETS = ("REDIS_PASSWORD", "FLOWER_PASSWORD", "RABBITMQ_PASSWORD", "RQ_DASHBOARD_PASSWORD")


def env_example() -> tuple[dict[str, str], set[str]]:
    """(active KEY=value lines, names of the commented-out ``# KEY=value`` lines),
    read as the settings page reads them."""
    found = entries(ENV_EXAMPLE.read_text(encoding="utf-8"))
    active = {name: e.value for name, e in found.items() if e.active}
    return active, set(found) - set(active)


@pytest.mark.parametrize(
    "path",
    [
        "docker-compose.yml",
        "docker-compose.rabbitmq.yml",
        "docker-compose.ha.yml",
        "docker-compose.partition.yml",
        "Procfile",
    ],
)
def test_env_example_has_the_same_defaults(path: str) -> None:
    active, _ = env_example()
    defaults = DEFAULT.findall((REPO / path).read_text(encoding="utf-8"))
    assert defaults
    for name, value in defaults:
        if name in ("COMPOSE_PROJECT_NAME", "DEV_STATE_DIR"):
            continue
        if name in SECRETS:
            assert (active.get(name), value) == ("", PLACEHOLDER), f"{path}: {name}"
            continue
        assert active.get(name) == value, f"{path}: ${{{name}:-{value}}} vs .env.example"


def test_env_example_documents_every_setting() -> None:
    active, commented = env_example()
    missing = {name.upper() for name in Settings.model_fields} - set(active) - commented
    assert not missing, f"not in .env.example: {sorted(missing)}"
