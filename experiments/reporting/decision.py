"""The README's decision guide: which one, in a few lines, each with its number from
the reference run (``<!-- generated: decision -->``) and a link to its table or its test."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.reporting.report import load_if_any

TESTS = "tests/integration"
HEAVY = "docs/measured.md#heavy-work-cpu-bound-tasks-in-the-api-process"
FOOTPRINT = "docs/measured.md#footprint-resident-memory"
BROKERS = "docs/brokers.md#measured-side-by-side"


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
    ]


def render_from(reports: Path) -> str:
    return "\n".join(lines(reports))
