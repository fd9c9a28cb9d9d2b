"""The other pure pieces: scenario selection and parameter checks, compose's
output parsed, settings handed to a child process, the CLI's laziness, the
generated docs. No process is started (but one: a bare ``python -c``)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.__main__ import COMMANDS, command_parser
from experiments.crash.scenarios import BY_KEY, SCENARIOS, Params, pick
from experiments.reporting import docs
from harness.compose import (
    CONTAINER_PORTS,
    PORT_VARIABLES,
    option,
    parse_memory,
    parse_ps,
    published_env,
    service_states,
    settings_from_env,
    worker_concurrency,
)
from harness.procs import REPO_ROOT
from shared.settings import explicit_settings

# --- crash scenarios ----------------------------------------------------------------------


def test_scenarios_are_picked_by_key_or_number_once_each() -> None:
    assert [s.key for s in pick("1,worker-kill,1")] == ["bg-kill", "worker-kill"]
    assert [s.number for s in pick("2")] == ["2a", "2b"]  # the 2 is both SIGTERMs
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
    assert pick("redis-restart") == [restart]  # the name it had before RabbitMQ
    assert BY_KEY["redis-restart-no-aof"].spec(p).appendonly is False
    assert BY_KEY["redis-restart-no-aof"].brokers == ("redis",)  # RabbitMQ's queue is durable
    assert BY_KEY["consumer-timeout"].brokers == ("rabbitmq",)
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


# --- compose -------------------------------------------------------------------------------


def test_ps_output_in_either_of_compose_v2s_formats() -> None:
    rows = [{"Service": "worker", "State": "running"}, {"Service": "redis", "State": "exited"}]
    as_array = json.dumps(rows)
    as_lines = "\n".join(json.dumps(r) for r in rows) + "\nnot json\n"
    assert parse_ps(as_array) == parse_ps(as_lines) == rows
    assert service_states(rows, ["worker", "redis", "beat"]) == {
        "worker": True,
        "redis": False,
        "beat": False,
    }


def test_a_workers_command_line_and_redis_options() -> None:
    assert worker_concurrency(["celery", "worker", "--concurrency=3"]) == 3
    assert worker_concurrency(["celery", "worker", "-c", "4"]) == 4
    assert worker_concurrency(["celery", "worker"]) == 2
    redis = ["redis-server", "--appendonly", "yes", "--appendfsync=always"]
    assert option(redis, "appendonly") == "yes"
    assert option(redis, "appendfsync") == "always"
    assert option(redis, "save") is None
    assert parse_memory("12.5MiB") == 12.5 and parse_memory("1GiB") == 1024.0


def test_a_recreated_service_keeps_the_ports_the_project_publishes() -> None:
    # The variables are the ones the compose files publish with, on the right ports.
    files = (REPO_ROOT / "docker-compose.yml").read_text() + (
        REPO_ROOT / "docker-compose.rabbitmq.yml"
    ).read_text()
    for service, variable in PORT_VARIABLES.items():
        port = CONTAINER_PORTS[service]
        assert f"${{{variable}:-{port}}}:{port}" in files, service
    # From what docker bound (its inspect), whatever URL reaches it: all interfaces...
    bindings = {"8001/tcp": [{"HostIp": "0.0.0.0", "HostPort": "38001"}]}
    assert published_env("bg-api", bindings) == {
        "BG_API_PORT": "38001",
        "PUBLISH_ADDRESS": "0.0.0.0",
    }
    # ...or no address given; and a service that publishes nothing has nothing.
    bindings = {"8002/tcp": [{"HostIp": "", "HostPort": "38002"}]}
    assert published_env("celery-api", bindings) == {"CELERY_API_PORT": "38002"}
    assert published_env("worker", {}) == {}


def test_settings_reach_a_child_process_and_come_back_the_same() -> None:
    settings = explicit_settings(
        notification_delay_seconds=0.2, celery_acks_late=False, threadpool_tokens=None
    )
    env = settings.to_env()
    assert env["NOTIFICATION_DELAY_SECONDS"] == "0.2" and env["CELERY_ACKS_LATE"] == "false"
    assert "THREADPOOL_TOKENS" not in env  # None: the library's own default
    assert settings_from_env({**env, "PATH": "/bin"}) == settings


# --- the CLI ------------------------------------------------------------------------------


def test_every_command_builds_its_parser() -> None:
    for name in COMMANDS:
        parser, module = command_parser(name)
        assert callable(module.run), name
        assert parser.prog.endswith(name)


def test_help_imports_no_command_and_no_matplotlib() -> None:
    code = (
        "import sys\n"
        "from experiments.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'experiments.'))\n"
        "             and m != 'experiments.__main__'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "crash" in done.stdout and "footprint" in done.stdout  # listed...
    assert done.stdout.strip().splitlines()[-1] == "[]"  # ...but not imported


# --- generated docs ------------------------------------------------------------------------


def test_a_generated_region_is_redrawn_from_its_report(tmp_path: Path) -> None:
    data = {
        "machine": {"when": "2026-12-01T00:00:00+00:00", "platform": "Linux", "cpus": 2},
        "target": "local",
        "params": {
            "tasks": 1,
            "delay": 2.0,
            "concurrency": 2,
            "visibility": 5.0,
            "restore_interval": 0.5,
        },
        "scenarios": [],
    }
    (tmp_path / "crash.json").write_text(json.dumps(data))
    text = "before\n<!-- generated: crash -->\nstale table\n<!-- /generated -->\nafter\n"
    new = docs.generate(text, tmp_path)
    assert new.startswith("before\n<!-- generated: crash -->\n*Measured 2026-12-01")
    assert "stale table" not in new and "| scenario |" in new and new.endswith("after\n")
    assert docs.generate(new, tmp_path) == new  # stable
    with pytest.raises(KeyError, match="nothing"):
        docs.generate("<!-- generated: nothing -->\n<!-- /generated -->", tmp_path)


def _raised(exc: Exception, cause: Exception) -> Exception:
    """``exc`` as ``raise exc from cause`` leaves it (how kombu re-raises)."""
    exc.__cause__ = cause
    return exc


def test_a_failed_publish_tells_refused_from_unanswered() -> None:
    from kombu.exceptions import OperationalError

    from celery_app.main import _maybe_sent, _what_was_queued

    nacked = _raised(OperationalError(""), RuntimeError("MessageNacked"))
    unanswered = _raised(OperationalError("timed out"), TimeoutError("timed out"))
    assert not _maybe_sent(nacked) and not _maybe_sent(ConnectionRefusedError())
    assert _maybe_sent(unanswered)
    assert _what_was_queued([], [], ["a", "b"]) == "nothing was queued"
    assert _what_was_queued(["a"], [], ["b"]) == "a queued; b not"
    assert _what_was_queued([], ["a"], ["b"]) == (
        "a may have been (the broker did not confirm it in time); b not"
    )
    assert _what_was_queued(["a"], ["b"], []) == (
        "a queued; b may have been (the broker did not confirm it in time)"
    )


def test_the_experiments_statistics() -> None:
    from experiments.stats import percentile, ratio, summary

    values = [0.004, 0.001, 0.003, 0.002]
    # Linear between closest ranks, as numpy's default: rank 1.5 of 1..4 ms.
    assert percentile(values, 50) == pytest.approx(0.0025)
    assert percentile(values, 100) == 0.004 and percentile(values, 0) == 0.001
    assert math.isnan(percentile([], 50))
    s = summary(values)
    assert list(s) == ["n", "p50", "p95", "p99", "max", "mean"] and s["n"] == 4
    assert s["max"] == pytest.approx(4.0) and s["mean"] == pytest.approx(2.5)
    assert summary(values, keys=("p50", "max")) == {"p50": pytest.approx(2.5), "max": 4.0}
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(1.0, math.nan))
