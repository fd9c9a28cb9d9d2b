"""The README's decision guide: which one, in a few lines, each with its number from
the reference run (``<!-- generated: decision -->``) and a link to its table or its test."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.reporting.report import load_if_any
from shared.services import IMPLEMENTATIONS, Delivery, Implementation

TESTS = "tests/integration"
HEAVY = "docs/measured.md#heavy-work-cpu-bound-tasks-in-the-api-process"
FOOTPRINT = "docs/measured.md#footprint-resident-memory"
BROKERS = "docs/brokers.md#measured-side-by-side"
CAPACITY = "docs/measured.md#capacity-requests-a-second-at-saturation"
LOST_MACHINE = "docs/brokers.md#when-the-brokers-machine-is-lost"
BROKER_NAMES = {"redis": "Redis", "rabbitmq": "RabbitMQ"}


def _scenario(crash: Mapping[str, Any], key: str, broker: str = "") -> Mapping[str, Any]:
    for o in crash.get("scenarios", []):
        if o["key"] == key and (o.get("broker") or "") == broker and o["status"] == "ok":
            found: Mapping[str, Any] = o
            return found
    return {}


def _lost(o: Mapping[str, Any]) -> str:
    return f"{o.get('lost', '?')} of {o.get('submitted', '?')}"


def _rerun(o: Mapping[str, Any]) -> str:
    after = o.get("redelivered_after")
    return f"{after[0]:.1f} s" if after else "?"


def _capacity(reports: Path) -> str:
    """What the hand-over costs the API per task, and what one process takes: each
    measured implementation's route, on one process, its sent events (if it has
    any) as they are by default."""
    data = load_if_any("capacity", reports) or {}
    runs = [r for r in data.get("runs", []) if r["processes"] == 1 and not r.get("switched")]
    ladders = [lad for run in runs for lad in run["ladders"]]
    if not ladders:
        return ""

    def route(ladder: Mapping[str, Any]) -> Mapping[str, Any]:
        level = str(max(int(c) for c in ladder["levels"]))
        found: Mapping[str, Any] = ladder["levels"][level]
        return found

    def per_task(rungs: Mapping[str, Any]) -> str:
        cpu = rungs.get("default", {}).get("cpu_us"), rungs.get("bare", {}).get("cpu_us")
        if cpu[0] is None or cpu[1] is None:
            return "?"
        return f"{(cpu[0] - cpu[1]) / 2:,.0f} µs"

    def name(ladder: Mapping[str, Any]) -> str:
        broker = ladder.get("broker")
        on = f" on {BROKER_NAMES.get(broker, broker)}" if broker else ""
        return f"{ladder['title']}{on}"

    def does_the_work(ladder: Mapping[str, Any]) -> bool:
        spec = IMPLEMENTATIONS[Implementation(ladder["implementation"])]
        return spec.delivery == Delivery.in_process

    each = "; ".join(
        f"{name(lad)} {per_task(route(lad))}"
        + (" (the work included)" if does_the_work(lad) else "")
        + f", {route(lad).get('default', {}).get('per_s', 0):,.0f}/s"
        for lad in ladders
    )
    return (
        "- **What the hand-over costs the API** (its CPU per task, and the requests a "
        f"second [one process takes]({CAPACITY})): {each}."
    )


def _machine_lost(crash: Mapping[str, Any]) -> str:
    """The failover rows: Sentinel and a RabbitMQ cluster, when the leader dies."""
    sentinel = _scenario(crash, "sentinel-failover", "sentinel")
    cluster = _scenario(crash, "cluster-leader-kill", "rabbitmq-cluster")
    if not sentinel or not cluster:
        return ""

    def secs(o: Mapping[str, Any], key: str) -> str:
        v = o.get(key)
        return "never" if v is None else f"{v:.0f} s"

    return (
        "- **When the broker's machine is lost**: on Redis Sentinel the API publishes again "
        f"[{secs(sentinel, 'publishing_again_after')} after the primary dies]({LOST_MACHINE}), "
        f"the workers consume after {secs(sentinel, 'consumed_again_after')} (under a restart "
        f"policy: one may exit), {_lost(sentinel)} lost; a RabbitMQ cluster of three loses "
        f"[{_lost(cluster)}]({TESTS}/test_ha.py) when the queue's leader dies."
    )


def lines(reports: Path) -> list[str]:
    """One line per choice; every number from the reports, every claim a link."""
    crash = load_if_any("crash", reports) or {}
    heavy = (load_if_any("heavy", reports) or {}).get("runs", {})
    footprint = (load_if_any("footprint", reports) or {}).get("sides", {})
    bg_kill = _scenario(crash, "bg-kill")
    worker_kill = _scenario(crash, "worker-kill", "redis")
    on_redis = _scenario(crash, "worker-kill-two-workers", "redis")
    on_rabbitmq = _scenario(crash, "worker-kill-two-workers", "rabbitmq")
    slow = _scenario(crash, "slow-task", "redis")
    bg_heavy = heavy.get("bg-def", {}).get("p50_ratio", float("nan"))
    celery_heavy = heavy.get("celery", {}).get("p50_ratio", float("nan"))
    bg_mib = footprint.get("bg", {}).get("idle_rss_mib", float("nan"))
    celery_mib = footprint.get("celery", {}).get("idle_rss_mib", float("nan"))
    return [
        "- **BackgroundTasks is enough** for light work you can afford to lose. It needs "
        f"nothing but the API process ([{bg_mib:.0f} MiB]({FOOTPRINT})); but a killed server "
        f"[loses every task it held](docs/crash.md) ({_lost(bg_kill)} lost), nothing "
        f"[retries a failure]({TESTS}/test_failures.py), nothing runs on a schedule, and a "
        f"CPU-heavy task [slows its own API {bg_heavy:.0f}×]({HEAVY}) (p50).",
        "- **Use Celery** when a task must survive a crash or a deploy (a killed worker's task "
        f"is redelivered: [{_lost(worker_kill)} lost](docs/crash.md)), be retried with "
        f"backoff, [run on a schedule]({TESTS}/test_delivery.py) (Beat), or compute (its API's "
        f"p50: [{celery_heavy:.2f}×]({HEAVY})). It costs a broker, a worker, Beat and Flower "
        f"([{celery_mib:.0f} MiB]({FOOTPRINT}) idle).",
        "- **Which broker**: Redis if you run it already. A dead worker's task comes back after "
        f"the visibility timeout ([{_rerun(on_redis)}]({BROKERS})), and a task longer than that "
        f"timeout runs again while it runs ({slow.get('executed_more_than_once', '?')} of "
        f"{slow.get('submitted', '?')} here, written once). RabbitMQ hands the task back when "
        f"the worker's connection drops ([{_rerun(on_rabbitmq)}]({BROKERS})), and no timeout "
        "reruns a slow task.",
        *([lost] if (lost := _machine_lost(crash)) else []),
        *([capacity] if (capacity := _capacity(reports)) else []),
    ]


def render_from(reports: Path) -> str:
    return "\n".join(lines(reports))
