"""BackgroundTasks's line in the README's decision guide (``ImplementationSpec.guide``),
every number from the reference run's reports."""

from __future__ import annotations

from pathlib import Path

from experiments.reporting.decision import FOOTPRINT, HEAVY, TESTS, lost, scenario
from experiments.reporting.report import load_if_any


def lines(reports: Path) -> list[str]:
    crash = load_if_any("crash", reports) or {}
    heavy = (load_if_any("heavy", reports) or {}).get("runs", {})
    footprint = (load_if_any("footprint", reports) or {}).get("sides", {})
    killed = scenario(crash, "bg-kill")
    slowed = heavy.get("bg-def", {}).get("p50_ratio", float("nan"))
    mib = footprint.get("bg", {}).get("idle_rss_mib", float("nan"))
    return [
        "- **BackgroundTasks is enough** for light work you can afford to lose. It needs "
        f"nothing but the API process ([{mib:.0f} MiB]({FOOTPRINT})); but a killed server "
        f"[loses every task it held](docs/crash.md) ({lost(killed)} lost), nothing "
        f"[retries a failure]({TESTS}/test_failures.py), nothing runs on a schedule, and a "
        f"CPU-heavy task [slows its own API {slowed:.0f}×]({HEAVY}) (p50).",
    ]


def cells() -> dict[str, str]:
    """What BackgroundTasks can do, in the table across every implementation."""
    return {
        "runs twice": "never: nothing hands a task out again",
        "retries": f"none: [a failure is final]({TESTS}/test_failures.py)",
        "schedule": "none",
        "time limits": "none: a task runs as long as it likes, in the API's process",
        "dead letters": "none",
        "monitoring": "none: the lab's column",
        "brokers": "none: the API's own memory",
    }
