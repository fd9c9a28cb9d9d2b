"""The task ledger: the life of every task, for both implementations, in Redis.

One hash per task (``ledger:task:<id>``) and one sorted set per implementation
(``ledger:index:<impl>``, scored by the time the task was first seen). The API
writes ``queued`` before it answers; whatever runs the task writes ``running``
(every run is an attempt, a redelivery after a crash included), ``retrying``,
``succeeded`` or ``failed``. The experiments and the lab count lost, duplicated
and retried tasks from here, the same way for both sides.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import redis

from shared.models import Implementation, TaskRecord, TaskState

logger = logging.getLogger(__name__)

T = TypeVar("T")

Fields = dict[str | bytes, bytes | float | int | str]

TASK_KEY = "ledger:task:{}"
INDEX_KEY = "ledger:index:{}"

# Tells processes apart even when a restarted container reuses the same PID.
_NONCE = secrets.token_hex(3)


def runner_id() -> str:
    """This process, as "host:pid:nonce". Computed per call: prefork children have their own PID.

    Recorded with each attempt, so that "running on a process that is gone" (lost)
    can be told apart from "running".
    """
    return f"{socket.gethostname()}:{os.getpid()}:{_NONCE}"


class LedgerUnavailable(RuntimeError):
    """Redis could not be reached (or is not configured)."""


def connect(url: str, socket_timeout: float = 1.0) -> redis.Redis:
    # Short timeouts on purpose: a dead Redis must turn into a quick 503, not a hang.
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        decode_responses=True,
        health_check_interval=10,
    )


class Ledger:
    def __init__(
        self,
        client: redis.Redis | None,
        implementation: Implementation,
        *,
        best_effort: bool = False,
    ) -> None:
        self.client = client
        self.implementation = implementation
        # The BackgroundTasks side keeps serving without Redis: it logs a failed
        # ledger write instead of failing the request or the task.
        self.best_effort = best_effort

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def _do(self, what: str, op: Callable[[redis.Redis], T], *, write: bool = True) -> T | None:
        # Only writes are best effort: a read that cannot reach Redis must say so
        # (503), not pretend the task does not exist (404).
        lenient = self.best_effort and write
        if self.client is None:
            if lenient:
                return None
            raise LedgerUnavailable("the ledger is off: REDIS_URL is not set")
        try:
            return op(self.client)
        except redis.RedisError as exc:
            if lenient:
                logger.warning("ledger %s skipped, Redis unavailable: %s", what, exc)
                return None
            raise LedgerUnavailable(f"the ledger is unavailable (Redis: {exc})") from exc

    # --- writes -----------------------------------------------------------------

    def queued(
        self,
        task_id: str,
        kind: str,
        detail: Mapping[str, str] | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        """``owner``: the process that holds the queued task in memory (BackgroundTasks)."""
        now = time.time()
        fields: Fields = {
            "task_id": task_id,
            "implementation": self.implementation.value,
            "kind": kind,
            "state": TaskState.queued.value,
            "attempts": 0,
            "retries": 0,
            "queued_at": now,
            "updated_at": now,
        }
        if owner is not None:
            fields["runner"] = owner
        fields.update({f"detail.{k}": v for k, v in (detail or {}).items()})

        def op(r: redis.Redis) -> None:
            pipe = r.pipeline()
            pipe.hset(TASK_KEY.format(task_id), mapping=fields)
            pipe.zadd(INDEX_KEY.format(self.implementation.value), {task_id: now})
            pipe.execute()

        self._do("queued", op)

    def running(self, task_id: str, kind: str) -> int:
        """Record the start of an attempt; return its number (1 for the first run)."""
        now = time.time()
        key = TASK_KEY.format(task_id)

        def op(r: redis.Redis) -> int:
            pipe = r.pipeline()
            # Beat's tasks were never queued through an API: the first run creates them.
            pipe.hsetnx(key, "task_id", task_id)
            pipe.hsetnx(key, "implementation", self.implementation.value)
            pipe.hsetnx(key, "kind", kind)
            pipe.hsetnx(key, "queued_at", now)
            pipe.hincrby(key, "attempts", 1)
            pipe.hset(
                key,
                mapping={
                    "state": TaskState.running.value,
                    "started_at": now,
                    "updated_at": now,
                    "runner": runner_id(),
                },
            )
            pipe.zadd(INDEX_KEY.format(self.implementation.value), {task_id: now}, nx=True)
            return int(pipe.execute()[4])

        return self._do("running", op) or 1

    def retrying(self, task_id: str, error: str, countdown: float) -> None:
        self._finish(task_id, TaskState.retrying, error=error, retries=1, countdown=countdown)

    def succeeded(self, task_id: str, detail: Mapping[str, str] | None = None) -> None:
        self._finish(task_id, TaskState.succeeded, detail=detail)

    def failed(self, task_id: str, error: str) -> None:
        self._finish(task_id, TaskState.failed, error=error)

    def _finish(
        self,
        task_id: str,
        state: TaskState,
        *,
        error: str | None = None,
        retries: int = 0,
        countdown: float | None = None,
        detail: Mapping[str, str] | None = None,
    ) -> None:
        now = time.time()
        fields: Fields = {"state": state.value, "updated_at": now}
        if state in (TaskState.succeeded, TaskState.failed):
            fields["finished_at"] = now
        if error is not None:
            fields["error"] = error[:500]
        if countdown is not None:
            fields["detail.retry_in"] = f"{countdown:.3f}"
        fields.update({f"detail.{k}": v for k, v in (detail or {}).items()})
        key = TASK_KEY.format(task_id)

        def op(r: redis.Redis) -> None:
            pipe = r.pipeline()
            pipe.hset(key, mapping=fields)
            if retries:
                pipe.hincrby(key, "retries", retries)
            pipe.execute()

        self._do(state.value, op)

    def forget(self, task_id: str) -> None:
        """Remove a task that was never handed over (its publish failed)."""

        def op(r: redis.Redis) -> None:
            r.delete(TASK_KEY.format(task_id))
            r.zrem(INDEX_KEY.format(self.implementation.value), task_id)

        self._do("forget", op)

    # --- reads ------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord | None:
        raw = self._do("get", lambda r: r.hgetall(TASK_KEY.format(task_id)), write=False)
        return _record(raw) if raw else None

    def list(
        self,
        implementation: Implementation | None = None,
        *,
        since: float | None = None,
        limit: int = 500,
    ) -> list[TaskRecord]:
        """Tasks first seen at or after ``since``, oldest first, at most ``limit``."""
        impls: Iterable[Implementation] = (
            [implementation] if implementation else list(Implementation)
        )

        def op(r: redis.Redis) -> list[TaskRecord]:
            ids: list[tuple[str, float]] = []
            for impl in impls:
                ids += r.zrangebyscore(
                    INDEX_KEY.format(impl.value),
                    since if since is not None else "-inf",
                    "+inf",
                    start=0,
                    num=limit,
                    withscores=True,
                )
            ids.sort(key=lambda pair: pair[1])
            pipe = r.pipeline()
            for task_id, _ in ids[:limit]:
                pipe.hgetall(TASK_KEY.format(task_id))
            return [_record(raw) for raw in pipe.execute() if raw]

        return self._do("list", op, write=False) or []

    def ping(self) -> bool:
        try:
            return bool(self._do("ping", lambda r: r.ping(), write=False))
        except LedgerUnavailable:
            return False


def _record(raw: Mapping[str, str]) -> TaskRecord:
    detail = {k.removeprefix("detail."): v for k, v in raw.items() if k.startswith("detail.")}
    fields = {k: v for k, v in raw.items() if not k.startswith("detail.")}
    return TaskRecord.model_validate({**fields, "detail": detail})
