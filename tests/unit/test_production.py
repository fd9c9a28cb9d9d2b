"""The production override (``docker-compose.prod.yml``) says what docs/production.md
promises: every service restarts on its own and has limits, every secret is
required, the time limits sit inside the visibility timeout, the worker's
processes are recycled, and no healthcheck is dropped. Pure: the files are read."""

from __future__ import annotations

import re
from typing import Any

import yaml

from shared.settings import Settings
from tests.unit.conftest import REPO

DEFAULT = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / name).read_text(encoding="utf-8"))
    services: dict[str, Any] = data["services"]
    return services


def prod_default(name: str) -> float:
    text = (REPO / "docker-compose.prod.yml").read_text(encoding="utf-8")
    return float(dict(DEFAULT.findall(text))[name])


def test_every_service_comes_back_on_its_own_within_its_limits() -> None:
    base, prod = load("docker-compose.yml"), load("docker-compose.prod.yml")
    assert set(prod) == set(base)
    for name, service in prod.items():
        assert service["restart"] == "unless-stopped", name
        assert service["deploy"]["resources"]["limits"]["memory"], name
        assert "healthcheck" not in service or service["healthcheck"].get("disable") is not True


def test_every_secret_is_required_not_defaulted() -> None:
    text = (REPO / "docker-compose.prod.yml").read_text(encoding="utf-8")
    for secret in ("REDIS_PASSWORD", "FLOWER_USER", "FLOWER_PASSWORD"):
        assert re.search(rf"\$\{{{secret}:\?", text), secret
        assert not re.search(rf"\$\{{{secret}:-", text), secret
    assert "change-me" not in text


def test_the_time_limits_the_countdowns_and_the_visibility_timeout_fit_together() -> None:
    soft, hard = prod_default("TASK_SOFT_TIME_LIMIT"), prod_default("TASK_TIME_LIMIT")
    visibility = prod_default("CELERY_VISIBILITY_TIMEOUT")
    restore = prod_default("CELERY_RESTORE_INTERVAL")
    countdown = prod_default("RETRY_BACKOFF_MAX_SECONDS")
    Settings(task_soft_time_limit=soft, task_time_limit=hard)  # accepted at start
    # Redis hands out again what is unacknowledged at the visibility timeout: a task
    # killed at the hard limit, or a retry waiting for its countdown, must come first.
    assert hard + restore < visibility and countdown + restore < visibility
    assert prod_default("NOTIFICATION_DELAY_SECONDS") == 0  # no demo delay
    worker = load("docker-compose.prod.yml")["worker"]
    assert any(str(a).startswith("--max-tasks-per-child") for a in worker["command"])
    assert any(str(a).startswith("--max-memory-per-child") for a in worker["command"])
    # A warm shutdown lets a task run to its hard limit.
    assert float(worker["stop_grace_period"].rstrip("s")) > hard


def test_the_sent_event_is_off_and_the_heartbeat_short_in_production() -> None:
    text = (REPO / "docker-compose.prod.yml").read_text(encoding="utf-8")
    assert "${CELERY_SEND_SENT_EVENT:-false}" in text
    # Not overridden: the setting's own default, which docs/production.md names.
    assert "CELERY_BROKER_HEARTBEAT" not in text
    assert Settings.model_fields["celery_broker_heartbeat"].default == 10.0
    assert Settings.model_fields["celery_send_sent_event"].default is False
