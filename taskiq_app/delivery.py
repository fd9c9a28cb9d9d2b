"""When a taskiq task whose worker died comes back: the rule the verdict reads for
this implementation (declared in ``shared.services``). No taskiq import: the
verdict is pure, and reading the rule must not start a broker."""

from __future__ import annotations

import math
from typing import Any

from shared.redelivery import Redelivery
from shared.settings import Settings


def redelivery(settings: Settings) -> Redelivery:
    """The stream broker: a message pending past the idle timeout is claimed at a
    live worker's next read (``ClaimingStreamBroker``: every read; taskiq-redis as
    it ships: only a read that returned new messages, so no bound). The list
    broker: never (BRPOP took it, and nothing holds it any more)."""
    if settings.taskiq_broker == "list":
        return Redelivery(
            "redis",
            visibility_timeout=math.inf,
            restore_interval=0.0,
            acks_late=False,
            holds_retries=False,
            why_lost="its worker died; the list broker had popped it, nothing holds it",
        )
    scan = settings.taskiq_read_block_seconds if settings.taskiq_claim_when_idle else math.inf
    return Redelivery("redis", settings.taskiq_idle_timeout_seconds, scan, holds_retries=False)


def horizon(seconds: float, scan: float) -> dict[str, Any]:
    """The stream broker, claiming a message pending ``seconds`` at a read every
    ``scan`` seconds, whether or not new messages come (``ClaimingStreamBroker``)."""
    return {
        "taskiq_broker": "stream",
        "taskiq_idle_timeout_seconds": seconds,
        "taskiq_read_block_seconds": scan,
        "taskiq_claim_when_idle": True,
    }


def stock() -> dict[str, Any]:
    """taskiq-redis as it ships: a dead worker's message claimed only after a read that
    returned new ones, once idle for ten minutes. This project: on every read, 15 s."""
    return {"taskiq_claim_when_idle": False, "taskiq_idle_timeout_seconds": 600.0}
