"""Which processes that run tasks are alive, and since when: their heartbeats.

Each process that runs tasks (a bg-api process, a Celery pool process) writes
``ledger:runner:<id>`` every second, from a thread of its own, and records a
clean exit. ``shared.ledger`` reads them to tell a run still going from one that
died with its process; ``shared.verdict`` to tell a task in flight from a lost one.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

import redis
from redis.typing import EncodableT, FieldT

from shared.models import Implementation

logger = logging.getLogger(__name__)

RUNNER_KEY = "ledger:runner:{}"
RUNNERS_KEY = "ledger:runners"
# Set by a worker's main process once its consumer takes tasks (per its runner id):
# its pool processes beat from then on, not from their fork (``Heartbeat.start_once``).
CONSUMING_KEY = "ledger:consuming:{}"
# A runner's heartbeat record outlives its process by this much (then Redis drops it).
RUNNER_TTL = 3600

# Tells processes apart even when a restarted container reuses the same PID.
_NONCE = secrets.token_hex(3)


def runner_id() -> str:
    """This process, as "host:pid:nonce". Computed per call: prefork children have their own PID."""
    return f"{socket.gethostname()}:{os.getpid()}:{_NONCE}"


def process_nonce() -> str:
    """The nonce in this process's runner ids (and its forked children's)."""
    return _NONCE


def mark_consuming(client: redis.Redis) -> None:
    """This process's consumer takes tasks now: its pool processes may beat.

    Best effort, like a beat: a pool process also starts beating at its first task."""
    try:
        client.set(CONSUMING_KEY.format(runner_id()), time.time(), ex=RUNNER_TTL)
    except redis.RedisError as exc:
        logger.warning("could not mark %s consuming, Redis unavailable: %s", runner_id(), exc)


class Heartbeat:
    """A process that runs tasks says it is alive, every ``interval`` seconds.

    A daemon thread: it keeps beating while the process's event loop or its task
    is busy, and stops when the process dies. ``stop()`` records a clean exit.
    Best effort: a beat that cannot reach Redis is skipped (and logged once).
    """

    def __init__(
        self,
        client: redis.Redis,
        implementation: Implementation,
        role: str,
        *,
        interval: float = 1.0,
        activity: Callable[[], tuple[int, float]] | None = None,
        flush: Callable[[], object] | None = None,
    ) -> None:
        self.client = client
        # The runs this process has going and since when it has had none
        # (``Ledger.activity``): written with each beat.
        self.activity = activity
        # Called after a beat Redis took (``Ledger.flush``: the ends it missed), in a
        # thread of its own: a write that waits must not hold the next beat back.
        self.flush = flush
        self._flushing: threading.Thread | None = None
        self.implementation = implementation
        self.role = role
        self.interval = interval
        self.runner = runner_id()
        self.started_at = time.time()
        self._started = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"ledger-heartbeat-{role}", daemon=True
        )
        self._failing = False

    def start(self) -> Heartbeat:
        """Beat now and every ``interval`` from now on (a second call does nothing)."""
        if not self._started.acquire(blocking=False):
            return self
        self.started_at = time.time()
        self.beat()
        self._thread.start()
        return self

    def start_once(self, consuming: str, poll: float = 0.2) -> Heartbeat:
        """Start once the process ``consuming`` names has marked its consumer ready.

        A Celery pool process is forked before its worker consumes: a beat from then
        would call it free seconds before any task can reach it (on RabbitMQ, long
        enough for the verdict to call a requeued task lost). The wait is a thread
        of its own; ``start()`` at the first task ends it too."""

        def wait() -> None:
            key = CONSUMING_KEY.format(consuming)
            while not self._stop.is_set() and not self._started.locked():
                try:
                    if self.client.exists(key):
                        self.start()
                        return
                except redis.RedisError:
                    pass  # the next poll; the first task starts it anyway
                self._stop.wait(poll)

        threading.Thread(target=wait, name=f"ledger-consuming-{self.role}", daemon=True).start()
        return self

    def beat(self, *, stopped: bool = False) -> None:
        now = time.time()
        key = RUNNER_KEY.format(self.runner)
        fields: dict[FieldT, EncodableT] = {
            "runner": self.runner,
            "implementation": self.implementation.value,
            "role": self.role,
            "started_at": self.started_at,
            "seen_at": now,
        }
        if stopped:
            fields["stopped_at"] = now
        if self.activity is not None:
            busy, free_since = self.activity()
            fields["busy"] = busy
            fields["free_since"] = free_since
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, RUNNER_TTL)
            pipe.zadd(RUNNERS_KEY, {self.runner: now})
            pipe.zremrangebyscore(RUNNERS_KEY, "-inf", now - RUNNER_TTL)
            pipe.execute()
            self._failing = False
            if self.flush is not None and not (self._flushing and self._flushing.is_alive()):
                self._flushing = threading.Thread(
                    target=self.flush, name=f"flush-{self.runner}", daemon=True
                )
                self._flushing.start()
        except redis.RedisError as exc:
            if not self._failing:
                logger.warning("heartbeat of %s skipped, Redis unavailable: %s", self.runner, exc)
            self._failing = True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 2)
        if self._started.locked():
            self.beat(stopped=True)
