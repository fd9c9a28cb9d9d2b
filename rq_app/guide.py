"""What RQ can do, in the table across every implementation
(``ImplementationSpec.cells``), each claim a link to what shows it."""

from __future__ import annotations

from experiments.reporting.crash import anchor
from experiments.reporting.decision import TESTS

CRASH = "docs/crash.md"


def cells() -> dict[str, str]:
    return {
        "runs twice": "never by itself: a started job is not handed out again (a dead "
        "worker's is abandoned, or retried by its Retry)",
        "retries": f"[Retry(max, interval), through the worker's scheduler]({TESTS}/test_rq.py)"
        ", a dead worker's job included",
        "schedule": f"[a job that schedules the next (enqueue_at)]({TESTS}/test_delivery.py)",
        "time limits": f"[job_timeout, and a kill 60 s past it]({CRASH}#{anchor('rq-hung-task')})",
        "dead letters": f"[the FailedJobRegistry]({CRASH}#{anchor('rq-horse-kill')}): "
        "abandoned jobs wait for `rq requeue`",
        "monitoring": "rq-dashboard (`--profile rq`), behind basic auth",
        "brokers": "Redis only",
    }
