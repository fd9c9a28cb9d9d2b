"""The crash scenarios and their parameters (``experiments.crash.scenarios``): pure data."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from experiments.crash.outcome import Outcome
from experiments.crash.scenarios import BY_KEY, SCENARIOS, Params, pick
from experiments.reporting.crash import merge, notes
from shared.services import IMPLEMENTATIONS, SERVICES, Implementation


def test_scenarios_are_picked_by_key_once_each_and_by_implementation() -> None:
    assert [s.key for s in pick("bg-kill,worker-kill,bg-kill")] == ["bg-kill", "worker-kill"]
    assert pick("all") == list(SCENARIOS) == pick(None)
    assert pick(" redis-restart-no-aof , ") == [BY_KEY["redis-restart-no-aof"]]
    with pytest.raises(ValueError, match="unknown scenario '2b'"):
        pick("bg-kill,2b")  # keys only: no numbers
    taskiq = pick("all", [Implementation.taskiq])
    assert taskiq and {s.implementation for s in taskiq} == {Implementation.taskiq}
    assert pick("bg-kill,taskiq-worker-kill", [Implementation.taskiq]) == [
        BY_KEY["taskiq-worker-kill"]
    ]


def test_every_declared_implementation_has_scenarios_and_only_a_brokers_run_per_broker() -> None:
    assert {s.implementation for s in SCENARIOS} == set(IMPLEMENTATIONS)
    for s in SCENARIOS:
        assert s.on_brokers == ("broker" in IMPLEMENTATIONS[s.implementation].needs), s.key
        # A service of its own implementation's, or one they share (Redis).
        declared = SERVICES.get(s.fault.service or "")
        assert declared is None or declared.implementation in (s.implementation, None), s.key
    assert not BY_KEY["taskiq-worker-kill"].on_brokers and BY_KEY["worker-kill"].on_brokers
    # taskiq's claim horizon is Celery's visibility timeout: the rows compare.
    p = Params()
    claims = BY_KEY["taskiq-worker-kill"].spec(p).settings
    assert claims["taskiq_idle_timeout_seconds"] == p.visibility
    assert claims["taskiq_claim_when_idle"]
    assert BY_KEY["taskiq-worker-kill-list"].spec(p).settings == {"taskiq_broker": "list"}


def test_merge_keeps_the_rows_not_run_and_stamps_each() -> None:
    row = {"key": "bg-kill", "broker": "", "status": "ok"}
    previous = {
        "brokers": ["redis"],
        "machine": {"when": "2026-12-01T00:00:00+00:00"},
        "scenarios": [row, {**row, "key": "worker-kill", "broker": "redis"}],
    }
    new = {"brokers": ["redis"], "scenarios": [{**row, "key": "taskiq-worker-kill"}, row]}
    merged = merge(previous, new, order=list(BY_KEY))
    assert [(o["key"], o["ran"][:10]) for o in merged["scenarios"]] == [
        ("bg-kill", merged["scenarios"][0]["ran"][:10]),
        ("worker-kill", "2026-12-01"),
        ("taskiq-worker-kill", merged["scenarios"][0]["ran"][:10]),
    ]
    assert merged["scenarios"][0]["ran"] != "2026-12-01T00:00:00+00:00"  # run again now


def test_merge_drops_a_row_on_a_broker_its_scenario_no_longer_runs_on() -> None:
    row = {"key": "worker-kill", "status": "ok", "ran": "2026-12-01T00:00:00+00:00"}
    previous = {"brokers": [], "scenarios": [{**row, "broker": "redis"}, {**row, "broker": "x"}]}
    new: dict[str, list[Any]] = {"brokers": [], "scenarios": []}
    merged = merge(previous, new, order=list(BY_KEY), brokers_of={"worker-kill": ("redis",)})
    assert [o["broker"] for o in merged["scenarios"]] == ["redis"]


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
    assert pick("broker-restart") == [restart]
    assert BY_KEY["redis-restart-no-aof"].spec(p).appendonly is False
    assert BY_KEY["redis-restart-no-aof"].brokers == ("redis",)  # RabbitMQ's queue is durable
    # RabbitMQ's own limit: on both of its queue types, and nowhere else.
    assert BY_KEY["consumer-timeout"].brokers == ("rabbitmq", "rabbitmq-classic")
    assert BY_KEY["consumer-timeout"].spec(p, "rabbitmq").consumer_timeout_ms == 500
    assert BY_KEY["bg-kill"].spec(p).services == ("redis", "bg-api")
    assert BY_KEY["worker-kill"].spec(p, "rabbitmq").broker == "rabbitmq"
    two = BY_KEY["worker-kill-two-workers"]
    assert (two.spec(p).workers, two.fault.restart, two.requests_of(p)) == (2, False, 1)
    assert BY_KEY["bg-kill-one-process"].spec(p).bg_workers == 2
    countdown = BY_KEY["long-countdown"].spec(p).settings
    assert countdown["retry_backoff_seconds"] > p.visibility and not countdown["retry_jitter"]
    settings = p.settings()
    assert (settings.notification_delay_seconds, settings.celery_acks_late) == (2.0, True)


def test_a_supervisor_that_went_down_with_its_process_reads_as_exited_restarted_consuming() -> None:
    o = Outcome(
        "dramatiq-worker-process-kill", "one process SIGKILLed", "dramatiq", "nothing lost",
        broker="redis", submitted=4, completed=4, running_at_kill=2, queued_at_kill=1,
        stopped_after=1.2, restarted_after=3.4, consumed_again_after=3.9, settle="settled",
    )  # fmt: skip
    data = {
        "target": "local",
        "params": {"tasks": 2, "delay": 2.0, "concurrency": 2, "visibility": 5.0,
                   "restore_interval": 0.5},
        "scenarios": [o.to_dict()],
    }  # fmt: skip
    assert (
        "the whole command exited 1.2 s after the kill, was started again (3.4 s), as a "
        "restart policy would, and ran a task again 3.9 s after the kill" in notes(data)
    )
    # A worker that exits by itself with nothing killed still reads as before.
    quiet = replace(o, running_at_kill=0, queued_at_kill=0, consumed_again_after=None)
    assert "exited by itself 1.2 s in and was started again (3.4 s)" in notes(
        {**data, "scenarios": [quiet.to_dict()]}
    )
