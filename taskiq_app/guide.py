"""What taskiq can do, in the table across every implementation
(``ImplementationSpec.cells``), each claim a link to what shows it."""

from __future__ import annotations

from experiments.reporting.crash import anchor
from experiments.reporting.decision import TESTS

CRASH = "docs/crash.md"


def cells() -> dict[str, str]:
    return {
        "runs twice": "a task pending longer than the idle timeout (the stream cannot tell "
        "it from a dead worker's)",
        "retries": f"[SmartRetryMiddleware, through the scheduler]({TESTS}/test_taskiq.py)",
        "schedule": f"[taskiq's scheduler]({TESTS}/test_delivery.py)",
        "time limits": f"[none for a thread]({CRASH}#{anchor('taskiq-hung-task')}): its "
        "timeout label cancels an async task",
        "dead letters": f"[none]({CRASH}#{anchor('taskiq-crash-loop')}): a task that kills "
        "its process is claimed again for ever",
        "monitoring": "none maintained: the lab's column",
        "brokers": f"Redis: [the stream]({TESTS}/test_taskiq.py) and the quick start's "
        f"[list, which loses a killed worker's task]({CRASH}#{anchor('taskiq-worker-kill-list')})",
    }
