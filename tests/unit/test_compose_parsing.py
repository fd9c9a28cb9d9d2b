"""What ``harness.compose`` reads from docker compose and docker inspect: pure parsers."""

from __future__ import annotations

import json

from harness.compose import (
    CONTAINER_PORTS,
    PORT_VARIABLES,
    option,
    parse_memory,
    parse_ps,
    published_env,
    service_states,
    worker_concurrency,
)
from tests.unit.conftest import REPO


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
    files = (REPO / "docker-compose.yml").read_text() + (
        REPO / "docker-compose.rabbitmq.yml"
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
