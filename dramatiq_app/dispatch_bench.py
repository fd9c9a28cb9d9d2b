"""What ``python -m experiments dispatch`` measures of dramatiq: one enqueue against
the cheapest write of a message as long as its own to the same Redis.

The experiment (``experiments.perf.dispatch_measure``) finds this module from the
declaration (``<package>.dispatch_bench``) and times every variant, the floor
first; nothing here times anything. Variants (Redis):

- ``hset+rpush``: the two writes dramatiq's enqueue script makes (the message into
  the queue's hash, its id onto the list), pipelined, of a payload as long as the
  message an enqueue sends;
- ``enqueue, stock broker``: dramatiq's ``RedisBroker`` as it ships;
- ``enqueue``: the project's broker (``create_broker``, its middleware), as the
  routes enqueue;
- ``API schedule()``: the API's whole hand-over (``Handover.record``: the ledger's
  write, then the enqueue).

Messages go to a namespace no worker reads (``dispatch-bench``), deleted between
rounds and at the end. Heavy imports wait for a bench to be made: the report's
renderer reads only the names and ``describe``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NAMESPACE = "dispatch-bench"
MESSAGE = "item created: 노트북 (1,500,000.00)"
FLOOR = "hset+rpush"
PROFILED = "enqueue"
# dramatiq's Redis broker keeps one client for every enqueue: none is built per call.
CLIENT_CLASS = "redis.Redis"


class RedisBench:
    """dramatiq on Redis, the ledger on the same Redis."""

    floor = FLOOR
    profiled = PROFILED

    def __init__(self, url: str) -> None:
        import redis
        from dramatiq.brokers.redis import RedisBroker

        from dramatiq_app import tasks
        from dramatiq_app.broker import create_broker
        from dramatiq_app.handover import Handover, HandoverMiddleware
        from shared.ledger import Ledger, connect
        from shared.models import Implementation
        from shared.settings import explicit_settings

        settings = explicit_settings(redis_url=url, dramatiq_broker_url=url)
        project = create_broker(settings, HandoverMiddleware())
        # Its own namespace: the project's queue (and its workers) never see these.
        project.namespace = NAMESPACE  # type: ignore[attr-defined]
        stock = RedisBroker(url=url, namespace=NAMESPACE)  # type: ignore[no-untyped-call]
        self.brokers = (project, stock)
        self.actor = tasks.write_log
        self.ledger_client = connect(url)
        self.handover = Handover(Ledger(self.ledger_client, Implementation.dramatiq))
        self.raw = redis.Redis.from_url(url)
        # The floor's payload is as long as the message an enqueue sends.
        self.message_bytes = len(self.actor.message(MESSAGE).encode())
        self.payload = b"x" * self.message_bytes
        self.count = 0

    def _floor(self) -> object:
        self.count += 1
        pipe = self.raw.pipeline(transaction=False)
        pipe.hset(f"{NAMESPACE}:floor.msgs", str(self.count), self.payload)
        pipe.rpush(f"{NAMESPACE}:floor", str(self.count))
        return pipe.execute()

    def _schedule(self) -> object:
        from shared.models import TaskKind

        project = self.brokers[0]
        with self.handover.record(TaskKind.log) as [task_id]:
            return project.enqueue(self.actor.message(MESSAGE).copy(message_id=task_id))

    def variants(self) -> dict[str, Callable[[], object]]:
        project, stock = self.brokers
        return {
            FLOOR: self._floor,
            "enqueue, stock broker": lambda: stock.enqueue(self.actor.message(MESSAGE)),
            PROFILED: lambda: project.enqueue(self.actor.message(MESSAGE)),
            "API schedule()": self._schedule,
        }

    def between(self) -> None:
        keys = list(self.raw.scan_iter(f"{NAMESPACE}:*"))
        if keys:
            self.raw.delete(*keys)

    def close(self) -> None:
        try:
            self.between()
        finally:
            for broker in self.brokers:
                broker.close()
            self.raw.close()
            self.ledger_client.close()


def redis_bench(url: str) -> RedisBench:
    return RedisBench(url)


def describe(entry: dict[str, Any]) -> str:
    """Where the profiled call's CPU goes, for the report (after "... per call: ")."""
    return (
        "building the message (dramatiq's JSON encoder, a uuid for its Redis id), the "
        "middleware's before/after hooks, and one EVALSHA of dramatiq's dispatch script "
        f"(its heartbeat, and maintenance by chance); {entry['redis_clients_per_call']:g} new "
        f"redis.Redis client objects per call ({entry['redis_client_construction_us']:.0f} µs "
        "each, measured alone)."
    )
