"""One ``Settings`` for every process (``shared.settings``): what the environment
gives it, and how it reaches a child process."""

from __future__ import annotations

import pytest

from harness.compose import settings_from_env
from shared.settings import (
    Settings,
    SettingsRefused,
    explicit_settings,
    production_refusals,
    redact,
)


@pytest.mark.parametrize("value", ["0.2", "3"])
def test_notification_delay_accepts_floats(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_DELAY_SECONDS", value)
    assert Settings().notification_delay_seconds == float(value)


def test_settings_reach_a_child_process_and_come_back_the_same() -> None:
    settings = explicit_settings(
        notification_delay_seconds=0.2, celery_acks_late=False, threadpool_tokens=None
    )
    env = settings.to_env()
    assert env["NOTIFICATION_DELAY_SECONDS"] == "0.2" and env["CELERY_ACKS_LATE"] == "false"
    assert "THREADPOOL_TOKENS" not in env  # None: the library's own default
    assert settings_from_env({**env, "PATH": "/bin"}) == settings


def test_a_log_level_in_any_case_is_one_logging_can_take() -> None:
    assert Settings(log_level="info").log_level == "INFO"
    with pytest.raises(ValueError, match="log_level"):
        Settings(log_level="chatty")


def test_a_soft_time_limit_not_below_the_hard_one_is_refused_at_start() -> None:
    with pytest.raises(
        ValueError, match=r"TASK_SOFT_TIME_LIMIT \(40\) must be below TASK_TIME_LIMIT"
    ):
        Settings(task_soft_time_limit=40, task_time_limit=40)
    assert Settings(task_soft_time_limit=0, task_time_limit=5).task_time_limit == 5  # 0: none


def test_only_a_quorum_queue_with_a_delivery_limit_bounds_deliveries_itself() -> None:
    amqp = "amqp://u:p@h//"
    assert Settings(celery_broker_url=amqp).broker_bounds_deliveries
    assert not Settings(
        celery_broker_url=amqp, celery_queue_type="classic"
    ).broker_bounds_deliveries
    assert not Settings(celery_broker_url=amqp, celery_delivery_limit=0).broker_bounds_deliveries
    assert not Settings(redis_url="redis://h:1/0").broker_bounds_deliveries


def test_a_url_in_a_log_line_shows_no_password() -> None:
    assert redact("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact("amqp://celery:s3cret@rabbitmq:5672//") == "amqp://celery:***@rabbitmq:5672//"
    assert redact("redis://localhost:6379/0") == "redis://localhost:6379/0"


SECRET = "s3cret-value"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"redis_url": "redis://:change-me@redis:6379/0"}, "REDIS_URL holds the development"),
        ({"redis_url": "redis://redis:6379/0"}, "REDIS_URL has no password"),
        ({"redis_url": ""}, "REDIS_URL is empty"),
        ({"celery_broker_url": "amqp://celery:change-me@rabbitmq:5672//"}, "CELERY_BROKER_URL"),
        ({"celery_broker_url": "amqp://celery@rabbitmq:5672//"}, "CELERY_BROKER_URL has no"),
        ({"flower_basic_auth": "admin:change-me"}, "FLOWER_BASIC_AUTH holds"),
        ({"flower_basic_auth": "admin:"}, "FLOWER_BASIC_AUTH has an empty"),
        ({"celery_sentinel_password": "change-me"}, "CELERY_SENTINEL_PASSWORD"),
    ],
)
def test_production_refuses_a_placeholder_or_empty_secret_naming_it(
    fields: dict[str, str], named: str
) -> None:
    values = {"redis_url": f"redis://:{SECRET}@redis:6379/0", **fields}
    with pytest.raises(SettingsRefused, match=named) as refused:
        explicit_settings(environment="production", **values)
    assert SECRET not in str(refused.value)
    # Development takes the same values: the demo runs without a .env.
    assert explicit_settings(**values).environment == "development"


def test_production_starts_with_real_secrets() -> None:
    settings = explicit_settings(
        environment="production",
        redis_url=f"redis://:{SECRET}@redis:6379/0",
        celery_broker_url=f"amqp://celery:{SECRET}@rabbitmq:5672//",
        flower_basic_auth=f"admin:{SECRET}",
    )
    assert production_refusals(settings) == []


def test_a_refused_value_is_never_echoed() -> None:
    # pydantic puts the input in its errors; the input holds the URLs' passwords.
    with pytest.raises(ValueError) as refused:
        Settings(redis_url=f"redis://:{SECRET}@redis:6379/0", task_soft_time_limit=-1)
    assert SECRET not in str(refused.value)


def test_retention_says_when_a_record_may_be_gone() -> None:
    assert explicit_settings().retention.forgets_after == 86_400
    assert explicit_settings(ledger_unfinished_retention_seconds=60).retention.forgets_after == 60
    keep = explicit_settings(ledger_retention_seconds=0, ledger_unfinished_retention_seconds=0)
    assert keep.retention.forgets_after is None and keep.retention.index_horizon is None
    assert explicit_settings(ledger_retention_seconds=10).retention.index_horizon == 10 + 604_800
