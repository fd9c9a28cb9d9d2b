"""Celery's lines in the README's decision guide (``ImplementationSpec.guide``): when to
use it, which broker, and what a lost broker machine costs; every number from the
reference run's reports."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.reporting.decision import (
    BROKERS,
    FOOTPRINT,
    HEAVY,
    LOST_MACHINE,
    TESTS,
    lost,
    rerun,
    scenario,
)
from experiments.reporting.report import load_if_any


def lines(reports: Path) -> list[str]:
    crash = load_if_any("crash", reports) or {}
    heavy = (load_if_any("heavy", reports) or {}).get("runs", {})
    footprint = (load_if_any("footprint", reports) or {}).get("sides", {})
    worker_kill = scenario(crash, "worker-kill", "redis")
    on_redis = scenario(crash, "worker-kill-two-workers", "redis")
    on_rabbitmq = scenario(crash, "worker-kill-two-workers", "rabbitmq")
    slow = scenario(crash, "slow-task", "redis")
    slowed = heavy.get("celery", {}).get("p50_ratio", float("nan"))
    mib = footprint.get("celery", {}).get("idle_rss_mib", float("nan"))
    return [
        "- **Use Celery** when a task must survive a crash or a deploy (a killed worker's task "
        f"is redelivered: [{lost(worker_kill)} lost](docs/crash.md)), be retried with "
        f"backoff, [run on a schedule]({TESTS}/test_delivery.py) (Beat), or compute (its API's "
        f"p50: [{slowed:.2f}×]({HEAVY})). It costs a broker, a worker, Beat and Flower "
        f"([{mib:.0f} MiB]({FOOTPRINT}) idle).",
        "- **Which broker**: Redis if you run it already. A dead worker's task comes back after "
        f"the visibility timeout ([{rerun(on_redis)}]({BROKERS})), and a task longer than that "
        f"timeout runs again while it runs ({slow.get('executed_more_than_once', '?')} of "
        f"{slow.get('submitted', '?')} here, written once). RabbitMQ hands the task back when "
        f"the worker's connection drops ([{rerun(on_rabbitmq)}]({BROKERS})), and no timeout "
        "reruns a slow task.",
        *([machine] if (machine := _machine_lost(crash)) else []),
    ]


def _machine_lost(crash: Mapping[str, Any]) -> str:
    """The failover rows: Sentinel and a RabbitMQ cluster, when the leader dies."""
    sentinel = scenario(crash, "sentinel-failover", "sentinel")
    cluster = scenario(crash, "cluster-leader-kill", "rabbitmq-cluster")
    if not sentinel or not cluster:
        return ""

    def secs(o: Mapping[str, Any], key: str) -> str:
        v = o.get(key)
        return "never" if v is None else f"{v:.0f} s"

    return (
        "- **When the broker's machine is lost**: on Redis Sentinel the API publishes again "
        f"[{secs(sentinel, 'publishing_again_after')} after the primary dies]({LOST_MACHINE}), "
        f"the workers consume after {secs(sentinel, 'consumed_again_after')} (under a restart "
        f"policy: one may exit), {lost(sentinel)} lost; a RabbitMQ cluster of three loses "
        f"[{lost(cluster)}]({TESTS}/test_ha.py) when the queue's leader dies."
    )


def cells() -> dict[str, str]:
    """What Celery can do, in the table across every implementation."""
    return {
        "runs twice": "a task longer than the visibility timeout (Redis); a redelivery "
        "whose first run had written (written once: the work is idempotent)",
        "retries": f"[bounded, with backoff]({TESTS}/test_failures.py)",
        "schedule": f"[Beat]({TESTS}/test_delivery.py)",
        "time limits": f"[soft and hard]({TESTS}/test_limits.py)",
        "dead letters": "a bound on deliveries: [*gave up* after 3]"
        f"({TESTS}/test_limits.py) (a quorum queue's dead-letter queue on RabbitMQ)",
        "monitoring": "[Flower](scripts/compose-smoke.sh), behind basic auth",
        "brokers": f"Redis, RabbitMQ, [Sentinel and a RabbitMQ cluster]({TESTS}/test_ha.py)",
    }
