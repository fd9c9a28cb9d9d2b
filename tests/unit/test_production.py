"""The production overrides (``docker-compose.prod.yml``, and
``docker-compose.rabbitmq.prod.yml`` for Celery on RabbitMQ) say what
docs/production.md promises: every service restarts on its own and has limits,
every secret is required, ENVIRONMENT=production everywhere and no experiment
routes, Redis bounded below its memory limit, no password on a command line, the
time limits inside the visibility timeout, the worker's processes recycled, no
healthcheck dropped, and every service's log rotated in every compose file. Pure:
the files are read."""

from __future__ import annotations

import re
from typing import Any

import yaml

from shared.settings import Settings
from tests.unit.conftest import REPO

# Compose's interpolation; ``$${...}`` is an escaped ``$`` (a script's own variable).
DEFAULT = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")
COMPOSE_FILES = (
    "docker-compose.yml",
    "docker-compose.rabbitmq.yml",
    "docker-compose.prod.yml",
    "docker-compose.rabbitmq.prod.yml",
    "docker-compose.ha.yml",
    "docker-compose.partition.yml",
)
# How each file is used: on top of these (docs/compose.md, docs/production.md).
STACKS = (
    ("docker-compose.yml",),
    ("docker-compose.yml", "docker-compose.prod.yml"),
    ("docker-compose.yml", "docker-compose.rabbitmq.yml"),
    (
        "docker-compose.yml",
        "docker-compose.rabbitmq.yml",
        "docker-compose.prod.yml",
        "docker-compose.rabbitmq.prod.yml",
    ),
    ("docker-compose.yml", "docker-compose.ha.yml"),
    ("docker-compose.yml", "docker-compose.partition.yml"),
)


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
        assert not re.search(rf"(?<!\$)\$\{{{secret}:-", text), secret
    # No development default: only the start scripts name it, to refuse it.
    assert not re.search(r"(?<!\$)\$\{[A-Z_]+:-change-me\}", text)
    rabbit = (REPO / "docker-compose.rabbitmq.prod.yml").read_text(encoding="utf-8")
    for secret in ("RABBITMQ_USER", "RABBITMQ_PASSWORD"):
        assert re.search(rf"\$\{{{secret}:\?", rabbit), secret
        assert not re.search(rf"\$\{{{secret}:-", rabbit), secret


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


def merged(files: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The services as compose merges the files (mappings key by key, the rest replaced:
    enough for the keys read here)."""
    out: dict[str, dict[str, Any]] = {}
    for name in files:
        for service, spec in load(name).items():
            mine = out.setdefault(service, {})
            for key, value in spec.items():
                if isinstance(value, dict) and isinstance(mine.get(key), dict):
                    mine[key] = {**mine[key], **value}
                else:
                    mine[key] = value
    return out


def test_every_service_of_every_stack_rotates_its_log() -> None:
    for files in STACKS:
        for name, service in merged(files).items():
            logging = service.get("logging")
            assert logging, f"{files}: {name} has no logging"
            assert logging["driver"] == "json-file", (files, name)
            assert logging["options"]["max-size"] and logging["options"]["max-file"], name
        # Said where the service is declared (one anchor a file), not left to an override.
        seen: set[str] = set()
        for file in files:
            for declared, spec in load(file).items():
                if declared not in seen:
                    assert "logging" in spec, (file, declared)
                seen.add(declared)


def test_production_everywhere_and_no_experiment_routes() -> None:
    for files in STACKS[1], STACKS[3]:
        for name, service in merged(files).items():
            assert service["environment"]["ENVIRONMENT"] == "production", (files, name)
            assert service["restart"] == "unless-stopped", (files, name)
            assert service["deploy"]["resources"]["limits"]["memory"], (files, name)
            if name != "redis" and name != "rabbitmq":  # the Python services
                assert service["environment"]["EXPERIMENT_ROUTES"] == "0", name
                assert "LEDGER_RETENTION_SECONDS" in service["environment"], name
    # Off by default in the demo too; the names exist.
    env = load("docker-compose.yml")["bg-api"]["environment"]
    assert env["EXPERIMENT_ROUTES"] == "${EXPERIMENT_ROUTES:-0}"
    assert env["ENVIRONMENT"] == "${ENVIRONMENT:-development}"
    assert {"environment", "experiment_routes", "ledger_retention_seconds", "log_format"} <= set(
        Settings.model_fields
    )


def megabytes(size: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)\s*([a-zA-Z]*)", size).groups()  # type: ignore[union-attr]
    scale = {"": 2**-20, "b": 2**-20, "k": 2**-10, "kb": 2**-10, "m": 1, "mb": 1, "g": 1024}
    return float(number) * scale[unit.lower()]


def test_redis_is_bounded_below_its_memory_limit_and_never_evicts() -> None:
    redis = load("docker-compose.prod.yml")["redis"]
    command = [str(a) for a in redis["command"]]
    maxmemory = megabytes(command[command.index("--maxmemory") + 1])
    limit = megabytes(redis["deploy"]["resources"]["limits"]["memory"])
    assert 0 < maxmemory < 0.85 * limit  # room for the AOF rewrite's fork, the buffers
    # An evicted key is a lost task or a lost ledger record: Celery's advice.
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_no_password_on_a_command_line() -> None:
    scripts = []
    for name in COMPOSE_FILES:
        for service, spec in load(name).items():
            command = spec.get("command") or []
            words = [str(a) for a in (command if isinstance(command, list) else [command])]
            text = " ".join(words)
            for flag in ("--requirepass", "--masterauth", "default_pass", "-rabbit "):
                assert flag not in words and not text.startswith(flag), (name, service, flag)
            env = spec.get("environment") or {}
            if isinstance(env, dict):
                assert "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS" not in env, (name, service)
            if "redis-server" in text and "--sentinel" not in text:  # a sentinel: its file
                # The start script hands it over on redis-server's standard input.
                assert words[:2] == ["sh", "-c"] and 'requirepass "$$pw"' in words[2], service
                scripts.append(words[2])
    # One start script for every redis-server (the base's, prod's, the HA data nodes').
    assert len(scripts) == 4 and len(set(scripts)) == 1
    # Production refuses the development default and an empty password, by name.
    assert "*change-me*" in scripts[0] and "refuses REDIS_PASSWORD" in scripts[0]
    rabbit = load("docker-compose.rabbitmq.yml")["rabbitmq"]
    script = rabbit["command"][2]
    assert "refuses RABBITMQ_PASSWORD" in script and "default_pass = " in script
    assert rabbit["environment"]["RABBITMQ_CONFIG_FILE"].startswith("/tmp/")
    assert "umask 077" in script


def test_rabbitmq_in_production_requires_its_password_and_bounds_its_memory() -> None:
    rabbit = load("docker-compose.rabbitmq.prod.yml")
    assert set(rabbit) == {"rabbitmq", "celery-api", "worker", "beat", "flower"}
    env = rabbit["rabbitmq"]["environment"]
    assert env["RABBITMQ_PASSWORD"].startswith("${RABBITMQ_PASSWORD:?")
    assert "vm_memory_high_watermark.absolute" in env["RABBITMQ_EXTRA_CONF"]
    for name in ("celery-api", "worker", "beat", "flower"):
        assert "${RABBITMQ_PASSWORD:?" in rabbit[name]["environment"]["CELERY_BROKER_URL"]


def test_no_service_of_an_optional_profile_requires_a_variable_to_interpolate() -> None:
    # Compose interpolates every service of the files, in a profile or not: a variable
    # that only an optional service requires (`${X:?...}`) would refuse the production
    # stack of a user who never runs that profile.
    required = re.compile(r"\$\{(\w+):\?")
    optional = {name for name, s in load("docker-compose.yml").items() if s.get("profiles")}
    assert optional
    for name in ("docker-compose.prod.yml", "docker-compose.rabbitmq.prod.yml"):
        services = load(name)
        core = {v for n, s in services.items() if n not in optional
                for v in required.findall(yaml.safe_dump(s))}  # fmt: skip
        for service in optional & set(services):
            extra = set(required.findall(yaml.safe_dump(services[service]))) - core
            assert not extra, (name, service, extra)
