"""What dramatiq can do, in the table across every implementation
(``ImplementationSpec.cells``), each claim a link to what shows it."""

from __future__ import annotations

from experiments.reporting.crash import anchor
from experiments.reporting.decision import TESTS

CRASH = "docs/crash.md"
TEST = f"{TESTS}/test_dramatiq.py"


def cells() -> dict[str, str]:
    return {
        "runs twice": "a worker silent past the heartbeat timeout (cut off Redis, frozen) "
        "while its task runs; a slow task alone does not (a busy worker still speaks)",
        "retries": f"[Retries middleware, bounded, to the dead-letter queue]({TEST}): "
        "dramatiq's default retries every exception 20 times",
        "schedule": f"none: [APScheduler sends the periodic actor]({TESTS}/test_delivery.py)",
        "time limits": "TimeLimit middleware (10 min by default): an exception raised in the "
        "actor's thread, which a blocking C call (time.sleep) outlasts",
        "dead letters": f"[yes: every message that fails for good]({TEST}); a task that kills "
        "its process has no bound of dramatiq's: "
        f"[this project's, from the ledger]({CRASH}#{anchor('dramatiq-crash-loop', 'redis')})",
        "monitoring": "dramatiq-dashboard 0.4.0 needs dramatiq<2 and redis<5 (unmaintained): "
        "the lab's column",
        "brokers": f"[Redis]({CRASH}#{anchor('dramatiq-worker-kill', 'redis')}) and "
        f"[RabbitMQ]({CRASH}#{anchor('dramatiq-worker-kill-rabbitmq', 'rabbitmq-classic')})",
    }
