"""When a dramatiq task whose worker died comes back: the rule the verdict reads for
this implementation (declared in ``shared.services``). No broker is made here: the
verdict is pure.

- RabbitMQ: the broker requeues a consumer's unacknowledged messages the moment its
  connection closes (a SIGKILLed process's socket closes with it).
- Redis: dramatiq's broker keeps each worker process's fetched messages in a set of
  its own, and a heartbeat (every command the process sends). A maintenance pass,
  run by one command in a million / DRAMATIQ_MAINTENANCE_CHANCE, moves the messages of
  every process whose heartbeat is DRAMATIQ_HEARTBEAT_TIMEOUT_SECONDS old back to
  the queue. The timeout counts from the death (the last heartbeat), not from the
  delivery; the pass needs a command on that queue: a live worker's poll (at least
  every second while it has a free thread) or an enqueue.
"""

from __future__ import annotations

import math
from typing import Any

from dramatiq_app.broker import broker_kind
from shared.redelivery import Redelivery
from shared.settings import Settings

# dramatiq's own values (dramatiq/brokers/redis.py, dramatiq/worker.py).
MAINTENANCE_SCALE = 1_000_000
STOCK_HEARTBEAT_TIMEOUT = 60.0
STOCK_MAINTENANCE_CHANCE = 1000
POLL_SECONDS = 1.0  # an idle consumer polls at least this often (worker_timeout)


def maintenance_every(settings: Settings) -> float:
    """Seconds between the maintenance passes a free worker's polls run, at the latest:
    a poll's when every command runs one; otherwise no bound (a pass is a chance per
    command: on average one in a million / DRAMATIQ_MAINTENANCE_CHANCE polls)."""
    if settings.dramatiq_maintenance_chance >= MAINTENANCE_SCALE:
        return POLL_SECONDS
    return math.inf


def redelivery(settings: Settings) -> Redelivery:
    if broker_kind(settings) == "rabbitmq":
        return Redelivery("rabbitmq", visibility_timeout=0.0, restore_interval=0.0)
    # Redelivery.due on Redis: max(start + visibility, death) + restore. Counted from
    # the death here: no visibility timeout, the heartbeat timeout and a pass after it.
    restore = settings.dramatiq_heartbeat_timeout_seconds + maintenance_every(settings)
    return Redelivery("redis", visibility_timeout=0.0, restore_interval=restore)


def horizon(seconds: float, scan: float) -> dict[str, Any]:
    """A dead worker's message back within ``seconds`` (and a scan) of its delivery:
    a maintenance pass at every command (a free worker polls every second), after a
    heartbeat timeout a poll shorter; never under two polls, or a live but busy
    worker, which speaks about once a second, would look dead."""
    return {
        "dramatiq_heartbeat_timeout_seconds": max(seconds + scan - POLL_SECONDS, 2 * POLL_SECONDS),
        "dramatiq_maintenance_chance": MAINTENANCE_SCALE,
    }


def stock() -> dict[str, Any]:
    """dramatiq as it ships: a 60 s heartbeat timeout, a pass at one command in a
    thousand (a free worker polls about once a second: a pass every ~17 minutes on
    average), no bound on deliveries. This project's demo: 10 s, every command, 5."""
    return {
        "dramatiq_heartbeat_timeout_seconds": STOCK_HEARTBEAT_TIMEOUT,
        "dramatiq_maintenance_chance": STOCK_MAINTENANCE_CHANCE,
        "dramatiq_max_deliveries": 0,
    }
