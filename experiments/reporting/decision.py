"""The README's decision guide: which one, in a few lines, each with its number from
the reference run (``<!-- generated: decision -->``) and a link to its table or its test."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.reporting.report import load_if_any

TESTS = "tests/integration"


def _scenario(crash: Mapping[str, Any], key: str, broker: str = "") -> Mapping[str, Any]:
    for o in crash.get("scenarios", []):
        if o["key"] == key and (o.get("broker") or "") == broker and o["status"] == "ok":
            return o
    return {}


def _lost(o: Mapping[str, Any]) -> str:
    return f"{o.get('lost', '?')} of {o.get('submitted', '?')}"


def _rerun(o: Mapping[str, Any]) -> str:
    after = o.get("redelivered_after")
    return f"{after[0]:.1f} s" if after else "?"


def render_from(reports: Path) -> str:
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
    lines = [
        "- **BackgroundTasks is enough** for light work you can afford to lose: it runs in the "
        f"API process ({bg_mib:.0f} MiB, [no broker](docs/measured.md#footprint-resident-memory)"
        f"), but a killed server [loses every task it held]"
        f"(docs/crash.md) ({_lost(bg_kill)} in the reference run), nothing "
        f"[retries a failure]({TESTS}/test_failures.py), nothing runs on a schedule, and a "
        f"CPU-heavy task [slows its own API {bg_heavy:.0f}×]"
        "(docs/measured.md#heavy-work-cpu-bound-tasks-in-the-api-process) (p50).",
        "- **Use Celery** when a task must survive a crash or a deploy (a killed worker's task "
        f"is redelivered: [{_lost(worker_kill)} lost](docs/crash.md)), be retried with backoff, "
        f"[run on a schedule]({TESTS}/test_delivery.py) (Beat), or compute (the API's p50 "
        f"[{celery_heavy:.2f}×](docs/measured.md#heavy-work-cpu-bound-tasks-in-the-api-process)"
        f"); it costs a broker, a worker, Beat and Flower ({celery_mib:.0f} MiB idle).",
        "- **Which broker**: Redis if you run it already; a dead worker's task comes back after "
        f"the visibility timeout ([{_rerun(on_redis)}](docs/brokers.md#measured-side-by-side)), "
        f"and a task longer than that timeout runs twice ({slow.get('executed_more_than_once', '?')}"
        " here, written once). RabbitMQ hands it back when the connection drops "
        f"([{_rerun(on_rabbitmq)}](docs/brokers.md#measured-side-by-side)), and no timeout "
        "reruns a slow task.",
    ]
    return "\n".join(lines)
