"""The Sentinel override (``docker-compose.ha.yml``) runs what docs/brokers.md says:
a primary, a replica and three sentinels, none published, each behind
REDIS_PASSWORD; every Celery service on the sentinels, the ledger left on
``redis``. Pure: the files are read (the compose smoke runs it)."""

from __future__ import annotations

from typing import Any

import yaml

from shared.settings import Settings
from tests.unit.conftest import REPO


def load(name: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((REPO / name).read_text(encoding="utf-8"))["services"]
    return services


HA = load("docker-compose.ha.yml")
SENTINELS = ["sentinel-1", "sentinel-2", "sentinel-3"]


def test_a_primary_a_replica_and_three_sentinels_none_published() -> None:
    assert {"broker-primary", "broker-replica", *SENTINELS} <= set(HA)
    for name in ("broker-primary", "broker-replica", *SENTINELS):
        assert "ports" not in HA[name], name
        assert HA[name]["healthcheck"]["test"], name
    replica = HA["broker-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1] == "broker-primary"
    for name in SENTINELS:
        script = HA[name]["command"][-1]
        assert "sentinel monitor broker broker-primary 6379 2" in script  # quorum 2 of 3
        assert "--sentinel" in script


def test_every_node_and_sentinel_wants_the_password() -> None:
    for name in ("broker-primary", "broker-replica"):
        # docker-compose.yml's start script: requirepass and masterauth (a promoted
        # replica, or a primary back as a replica, needs it) from the environment.
        command = HA[name]["command"]
        assert command[:2] == ["sh", "-c"] and "--requirepass" not in command, name
        assert 'requirepass "$$pw"' in command[2] and 'masterauth "$$pw"' in command[2]
        assert HA[name]["environment"]["REDIS_PASSWORD"] == "${REDIS_PASSWORD:-change-me}"
    for name in SENTINELS:
        script = HA[name]["command"][-1]
        assert "requirepass $$REDIS_PASSWORD" in script
        assert "sentinel auth-pass broker $$REDIS_PASSWORD" in script


def test_every_celery_service_is_on_the_sentinels_and_the_ledger_stays_on_redis() -> None:
    base = load("docker-compose.yml")
    celery = {"celery-api", "worker", "beat", "flower"}
    assert celery <= set(HA) and "bg-api" not in HA
    for name in celery:
        env = HA[name]["environment"]
        urls = env["CELERY_BROKER_URL"].split(";")
        assert [u.split("@")[1] for u in urls] == [f"{s}:26379/0" for s in SENTINELS]
        assert all(u.startswith("sentinel://:${REDIS_PASSWORD:-change-me}@") for u in urls)
        assert env["CELERY_SENTINEL_MASTER"] == "broker"
        assert env["CELERY_SENTINEL_PASSWORD"] == "${REDIS_PASSWORD:-change-me}"
        assert "REDIS_URL" not in env  # the ledger: docker-compose.yml's redis
        assert set(HA[name]["depends_on"]) >= {"redis", *SENTINELS}
    assert "@redis:6379" in base["celery-api"]["environment"]["REDIS_URL"]
    # The settings the override names exist.
    assert {"celery_sentinel_master", "celery_sentinel_password"} <= set(Settings.model_fields)


def test_the_partition_override_routes_worker_2_through_a_proxy_it_can_pause() -> None:
    from harness.compose_target import LINK, PARTITIONED

    part = load("docker-compose.partition.yml")
    assert set(part) == {LINK, PARTITIONED}
    link = part[LINK]
    assert "ports" not in link
    assert link["command"][-2:] == ["--target", "redis:6379"]
    assert "./harness/proxy.py:/opt/proxy/proxy.py:ro" in link["volumes"]
    worker = part[PARTITIONED]
    assert worker["extends"] == {"file": "docker-compose.yml", "service": "worker"}
    # Its broker and its ledger (one Redis) through the link, the password as the base has it.
    assert worker["environment"]["REDIS_URL"] == (
        "redis://:${REDIS_PASSWORD:-change-me}@broker-link:6379/0"
    )
    assert worker["depends_on"][LINK]["condition"] == "service_healthy"
    # The proxy runs from this checkout's file as it is: the standard library only.
    text = (REPO / "harness" / "proxy.py").read_text(encoding="utf-8")
    imports = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    assert all(not line.startswith("from harness") for line in imports), imports
