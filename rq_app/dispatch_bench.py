"""What ``python -m experiments dispatch`` measures of RQ: one ``queue.enqueue``
against the cheapest write of a job as long as its own to the same Redis.

The experiment (``experiments.perf.dispatch_measure``) finds this module from the
declaration (``<package>.dispatch_bench``) and times every variant a bench offers,
the floor first; nothing here times anything. Variants (Redis: RQ's only broker):

- ``hset+rpush``: the job's hash and its id pushed on the queue, in one pipelined
  transaction (what an enqueue must write), a payload as long as the job's data;
- ``enqueue, stock queue``: RQ's ``Queue`` as its docs set it up (pickle, its
  defaults), the function enqueued by reference;
- ``queue.enqueue``: the project's queue (JSON, ``HandoverQueue``), as the routes enqueue;
- ``API schedule()``: the API's whole hand-over (``Handover.record``: the ledger's
  write, then the enqueue).

Jobs go to a queue no worker reads (``dispatch-bench``), emptied between rounds and
at the end. Heavy imports wait for a bench to be made: the report's renderer reads
only the names and ``describe``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

QUEUE = "dispatch-bench"
MESSAGE = "item created: 노트북 (1,500,000.00)"
FLOOR = "hset+rpush"
PROFILED = "queue.enqueue"
# The client class RQ would build per enqueue, if it built any (it uses the queue's).
CLIENT_CLASS = "redis.Redis"


class RedisBench:
    """RQ on Redis, the ledger on the same Redis."""

    floor = FLOOR
    profiled = PROFILED

    def __init__(self, url: str) -> None:
        import redis
        from rq import Queue

        from rq_app import tasks
        from rq_app.handover import Handover, HandoverQueue
        from rq_app.queue import SERIALIZER
        from shared.ledger import Ledger, connect
        from shared.models import Implementation

        self.raw = redis.Redis.from_url(url)
        self.project = HandoverQueue(QUEUE, connection=self.raw, serializer=SERIALIZER)
        self.stock = Queue(QUEUE, connection=self.raw)
        self.task = tasks.write_log
        self.ledger_client = connect(url)
        self.handover = Handover(
            Ledger(self.ledger_client, Implementation.rq), self.project, retry=None
        )
        # The floor's payload is as long as the data of the job an enqueue writes.
        job = self.project.enqueue(self.task, MESSAGE)
        self.payload = self.raw.hget(job.key, "data") or b""
        self.message_bytes = len(self.payload)
        self.between()

    def _floor(self) -> object:
        pipe = self.raw.pipeline()
        pipe.hset("rq:job:dispatch-bench-floor", "data", self.payload)
        pipe.rpush(f"rq:queue:{QUEUE}", "dispatch-bench-floor")
        return pipe.execute()

    def _schedule(self) -> object:
        from shared.models import TaskKind

        with self.handover.record(TaskKind.log) as [task_id]:
            return self.project.enqueue(self.task, MESSAGE, job_id=task_id)

    def variants(self) -> dict[str, Callable[[], object]]:
        return {
            FLOOR: self._floor,
            "enqueue, stock queue": lambda: self.stock.enqueue(self.task, MESSAGE),
            PROFILED: lambda: self.project.enqueue(self.task, MESSAGE),
            "API schedule()": self._schedule,
        }

    def between(self) -> None:
        self.project.empty()  # type: ignore[no-untyped-call]
        self.raw.delete("rq:job:dispatch-bench-floor")

    def close(self) -> None:
        try:
            self.between()
        finally:
            self.raw.close()
            self.ledger_client.close()


def redis_bench(url: str) -> RedisBench:
    return RedisBench(url)


def describe(entry: dict[str, Any]) -> str:
    """Where the profiled call's CPU goes, for the report (after "... per call: ")."""
    return (
        "building the job (a uuid, its JSON data, its hash's fields), RQ's checks (rate "
        "limits, dependencies), a pipelined transaction of several commands (the job's "
        f"hash, the queue, the set of queues), and {entry['redis_clients_per_call']:g} new "
        f"redis.Redis client objects ({entry['redis_client_construction_us']:.0f} µs each, "
        "measured alone)."
    )
