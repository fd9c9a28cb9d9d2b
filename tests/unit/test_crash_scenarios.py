"""The crash scenarios and their parameters (``experiments.crash.scenarios``): pure data."""

from __future__ import annotations

import pytest

from experiments.crash.scenarios import BY_KEY, SCENARIOS, Params, pick


def test_scenarios_are_picked_by_key_or_number_once_each() -> None:
    assert [s.key for s in pick("1,worker-kill,1")] == ["bg-kill", "worker-kill"]
    assert [s.number for s in pick("2")] == ["2a", "2b"]  # "2" is both SIGTERMs
    assert pick("all") == list(SCENARIOS) == pick(None)
    assert pick(" 7b , ") == [BY_KEY["redis-restart-no-aof"]]
    with pytest.raises(ValueError, match="unknown scenario 'nine'"):
        pick("1,nine")


def test_parameters_that_would_measure_something_else_are_refused() -> None:
    assert Params().problems() == []
    assert any("--grace" in p for p in Params(delay=1.0, grace=1).problems())
    assert any("runs twice" in p for p in Params(delay=2.0, visibility=2.5).problems())
    assert any("--tasks" in p for p in Params(tasks=0).problems())


def test_scenarios_impose_only_the_settings_they_are_about() -> None:
    p = Params(delay=2.0, grace=1)
    assert BY_KEY["worker-kill-stock-acks"].spec(p).settings == {"celery_acks_late": False}
    assert BY_KEY["slow-task"].spec(p).settings == {"celery_visibility_timeout": 1.0}
    assert BY_KEY["worker-kill"].spec(p).settings == {}
    assert BY_KEY["bg-term-timeout"].spec(p).graceful_timeout == 1
    restart = BY_KEY["broker-restart"]
    assert restart.spec(p).appendonly is True and restart.spec(p, "rabbitmq").own_broker
    assert pick("redis-restart") == [restart]  # an alias
    assert BY_KEY["redis-restart-no-aof"].spec(p).appendonly is False
    assert BY_KEY["redis-restart-no-aof"].brokers == ("redis",)  # RabbitMQ's queue is durable
    # RabbitMQ's own limit: on both of its queue types, and nowhere else.
    assert BY_KEY["consumer-timeout"].brokers == ("rabbitmq", "rabbitmq-classic")
    assert BY_KEY["consumer-timeout"].spec(p, "rabbitmq").consumer_timeout_ms == 500
    assert BY_KEY["bg-kill"].spec(p).services == ("redis", "bg-api")
    assert BY_KEY["worker-kill"].spec(p, "rabbitmq").broker == "rabbitmq"
    two = BY_KEY["worker-kill-two-workers"]
    assert (two.spec(p).workers, two.restart, two.requests(p)) == (2, False, 1)
    assert BY_KEY["bg-kill-one-process"].spec(p).bg_workers == 2
    countdown = BY_KEY["long-countdown"].spec(p).settings
    assert countdown["retry_backoff_seconds"] > p.visibility and not countdown["retry_jitter"]
    settings = p.settings()
    assert (settings.notification_delay_seconds, settings.celery_acks_late) == (2.0, True)
