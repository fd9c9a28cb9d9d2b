"""The task ledger: the life of every task, for both implementations, in Redis.

Its keys, the fields a task starts with and the scripts of a run are
``shared.ledger_layout``'s. The API
writes ``queued`` before it answers, every task of the request in one round
trip; whatever runs the task records each run (``attempt.<n>.*``: every run is
an attempt, a redelivery after a crash included) and its outcome.

A task delivered twice can have two runs going at once (the broker handed it
out again while the first still ran). ``running`` counts the runs still going,
and the task's ``state`` only becomes final when no run of it is left: the
first run to succeed does not hide the second. A run counts as still going
while its process is alive, which the ledger knows from the processes'
heartbeats (``shared.heartbeat``): a run whose process died (SIGKILL) never
ends on its own.

``shared.verdict`` reads all of this and decides, the same way for both
sides, what became of each task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.errors import LedgerUnavailable
from shared.heartbeat import RUNNER_KEY, RUNNER_TTL, RUNNERS_KEY, runner_id
from shared.ledger_layout import (
    FINISH,
    INDEX_KEY,
    START,
    TASK_KEY,
    NewTask,
    forget_commands,
    new_tasks,
    owner_of,
    parse_record,
    parse_runner,
    queue_commands,
    ttl,
)
from shared.models import PARKED_FATES, Implementation, RunnerRecord, TaskRecord, TaskState
from shared.settings import Retention, Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _options(socket_timeout: float) -> dict[str, Any]:
    return {
        # Short timeouts on purpose: a dead Redis must turn into a quick 503, not a hang.
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "decode_responses": True,
        "health_check_interval": 10,
        # A pooled connection that a Redis restart closed fails once, then reconnects:
        # one retry, at once, on a connection error only (a timeout is not retried).
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [redis.ConnectionError],
    }


def connect(url: str, socket_timeout: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(url, **_options(socket_timeout))


def connect_async(url: str, socket_timeout: float = 1.0) -> redis.asyncio.Redis:
    options = _options(socket_timeout)
    options["retry"] = AsyncRetry(NoBackoff(), 1)
    return redis.asyncio.Redis.from_url(url, **options)


# What a ledger that is given none keeps: every record, for ever.
KEEP_ALL = Retention(0.0, 0.0)


def ledger_for(settings: Settings, implementation: Implementation, *, best_effort: bool) -> Ledger:
    """The synchronous ledger a process works with, as the settings say: off
    (recording nothing, failing nothing) when ``settings.ledger_on`` is false."""
    if settings.ledger_off is not None:
        return Ledger(None, implementation, best_effort=True, off=settings.ledger_off)
    return Ledger(
        connect(settings.redis_url, settings.redis_socket_timeout),
        implementation,
        best_effort=best_effort,
        heartbeat_interval=settings.runner_heartbeat_seconds,
        retention=settings.retention,
    )


def async_ledger_for(
    settings: Settings, implementation: Implementation, *, best_effort: bool
) -> AsyncLedger:
    """The request path's ledger, by the same rule as ``ledger_for``."""
    if settings.ledger_off is not None:
        return AsyncLedger(None, implementation, best_effort=True, off=settings.ledger_off)
    return AsyncLedger(
        connect_async(settings.redis_url, settings.redis_socket_timeout),
        implementation,
        best_effort=best_effort,
        retention=settings.retention,
    )


class RunStart(NamedTuple):
    attempt: int
    # Deliveries that started a run, this one included (retries not counted).
    executions: int


class Ledger:
    """The ledger through a synchronous client: the tasks, the worker, the readers."""

    def __init__(
        self,
        client: redis.Redis | None,
        implementation: Implementation,
        *,
        best_effort: bool = False,
        heartbeat_interval: float = 1.0,
        off: str = "no Redis client",
        retention: Retention = KEEP_ALL,
    ) -> None:
        self.client = client
        self.implementation = implementation
        self.retention = retention
        # Why there is no client: what a read answers (503) when there is none.
        self.off = off
        # BackgroundTasks keeps serving without Redis: it logs a failed
        # ledger write instead of failing the request or the task.
        self.best_effort = best_effort
        # How often the processes that run tasks beat (``Heartbeat``): a run's end
        # may wait up to about this long to learn whether another run still goes.
        self.heartbeat_interval = heartbeat_interval
        self._start = client.register_script(START) if client is not None else None
        self._finish = client.register_script(FINISH) if client is not None else None
        # The runs this process has going (its heartbeat reports them).
        self._lock = threading.Lock()
        self._busy = 0
        self._free_since = time.time()
        # Ends of runs Redis did not take when they happened (``flush``).
        self._pending: list[Callable[[redis.Redis], None]] = []

    def activity(self) -> tuple[int, float]:
        """The runs this process has started and not ended, and since when it has had none."""
        with self._lock:
            return self._busy, self._free_since

    def _track(self, delta: int) -> None:
        with self._lock:
            self._busy = max(self._busy + delta, 0)
            if self._busy == 0:
                self._free_since = time.time()

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
            raise LedgerUnavailable(f"the ledger is off: {self.off}")
        try:
            return op(self.client)
        except redis.RedisError as exc:
            if lenient:
                logger.warning("ledger %s skipped, Redis unavailable: %s", what, exc)
                return None
            raise LedgerUnavailable(
                "the ledger cannot be reached", f"the ledger is unavailable (Redis: {exc})"
            ) from exc

    # --- writes -----------------------------------------------------------------

    def record_new(self, *kinds: str, detail: Mapping[str, str] | None = None) -> list[str]:
        """Record a request's tasks as queued, in one round trip; their new ids, in order."""
        tasks = new_tasks(kinds, detail)
        self.record_queued(tasks)
        return [t.task_id for t in tasks]

    def record_queued(self, tasks: Sequence[NewTask]) -> None:
        """Record tasks handed over, in one round trip."""
        now = time.time()
        owner = owner_of(self.implementation)

        def op(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=False)
            queue_commands(pipe, self.implementation, tasks, owner, now, self.retention)
            pipe.execute()

        self._do("queued", op)

    def forget(self, task_ids: Iterable[str]) -> None:
        """Remove tasks that were never handed over (their publish failed)."""
        ids = list(task_ids)
        if not ids:
            return

        def op(r: redis.Redis) -> None:
            pipe = r.pipeline(transaction=False)
            forget_commands(pipe, self.implementation, ids)
            pipe.execute()

        self._do("forget", op)

    def record_running(self, task_id: str, kind: str, *, unrecorded: int = 1) -> int:
        """Record the start of a run; return its attempt number (1 for the first run).
        ``unrecorded``: the number to go on with when the ledger is off or down (the
        caller may know it another way: Celery counts its retries)."""
        return self.record_start(task_id, kind, unrecorded=unrecorded).attempt

    def record_start(self, task_id: str, kind: str, *, unrecorded: int = 1) -> RunStart:
        """``running``, with how many times the task has been delivered and started
        (this run included; retries not counted): 0 when the ledger cannot say."""
        keys = [TASK_KEY.format(task_id), INDEX_KEY.format(self.implementation.value)]
        args = [
            task_id,
            self.implementation.value,
            kind,
            time.time(),
            runner_id(),
            ttl(self.retention.unfinished),
        ]

        def op(r: redis.Redis) -> RunStart:
            assert self._start is not None
            attempt, retries = self._start(keys=keys, args=args, client=r)
            return RunStart(int(attempt), int(attempt) - int(retries))

        started = self._do("running", op)
        self._track(+1)
        return started if started is not None else RunStart(unrecorded, 0)

    def open_attempt(self, task_id: str, runner: str) -> int | None:
        """The attempt ``runner`` started on this task and has not ended (its process
        died mid-run: a hard time limit killed it, say), if the ledger holds one."""
        record = self.get(task_id)
        runs = [r for r in (record.runs if record else []) if r.runner == runner]
        open_runs = [r.attempt for r in runs if r.ended_at is None]
        return max(open_runs) if open_runs else None

    def record_gave_up(
        self, task_id: str, kind: str, reason: str, *, attempt: int | None = None
    ) -> None:
        """Record that the task will not be run again (``Verdict.gave_up``): its run
        ``attempt`` ends here, or, with none given, the task is closed as it stands (the
        broker dead-lettered it), the runs its dead processes left open closed as
        abandoned. A task the ledger does not know is created."""
        self._close(task_id, kind, reason, {"gave_up": reason}, attempt)

    def record_parked(
        self,
        task_id: str,
        kind: str,
        fate: str,
        where: str,
        recover: str,
        *,
        attempt: int | None = None,
    ) -> None:
        """Record that the queue parked the task where someone can get it back, and
        nothing runs it again by itself: ``fate`` "abandoned" (the queue recorded it
        as failed without finishing it) or "dead-lettered" (the broker put it aside
        after a delivery limit); ``where`` it is now, and how to ``recover`` it.
        ``attempt`` as for ``record_gave_up``."""
        if fate not in PARKED_FATES:
            raise ValueError(f"fate must be one of {sorted(PARKED_FATES)}, not {fate!r}")
        parked = f"{fate}: now in {where}; to run it again: {recover}"
        self._close(task_id, kind, parked, {"fate": fate, "parked": parked}, attempt)

    def _close(
        self,
        task_id: str,
        kind: str,
        reason: str,
        detail: Mapping[str, str],
        attempt: int | None,
    ) -> None:
        if attempt is None:
            now = time.time()

            def op(r: redis.Redis) -> None:
                key = TASK_KEY.format(task_id)
                raw = cast("dict[str, str]", r.hgetall(key))
                open_runs = [
                    k.removesuffix(".started_at")
                    for k in raw
                    if k.startswith("attempt.") and k.endswith(".started_at")
                    and k.removesuffix("started_at") + "ended_at" not in raw
                ]  # fmt: skip
                pipe = r.pipeline(transaction=False)
                for run in open_runs:
                    pipe.hset(key, mapping={f"{run}.ended_at": now, f"{run}.outcome": "abandoned"})
                pipe.hsetnx(key, "task_id", task_id)
                pipe.hsetnx(key, "implementation", self.implementation.value)
                pipe.hsetnx(key, "kind", kind)
                pipe.hsetnx(key, "queued_at", now)
                pipe.hset(
                    key,
                    mapping={
                        "state": TaskState.failed.value,
                        "running_count": 0,
                        "error": reason[:500],
                        "finished_at": now,
                        "updated_at": now,
                        **{f"detail.{k}": v[:500] for k, v in detail.items()},
                    },
                )
                pipe.zadd(INDEX_KEY.format(self.implementation.value), {task_id: now}, nx=True)
                if finished := ttl(self.retention.finished):
                    pipe.expire(key, finished)
                else:
                    pipe.persist(key)
                pipe.execute()

            self._do("closed", op)
            return
        self.record_finished(task_id, attempt, TaskState.failed, error=reason, detail=detail)

    def record_finished(
        self,
        task_id: str,
        attempt: int,
        outcome: TaskState,
        *,
        error: str | None = None,
        countdown: float | None = None,
        detail: Mapping[str, str] | None = None,
    ) -> None:
        """Record the end of run ``attempt``: succeeded, failed, or retrying. Should
        Redis not answer, the end is kept and written once it does (``flush``): the
        run has ended whatever the ledger heard, and a run left open on a process
        that lives on would read as going for ever."""
        keys = [TASK_KEY.format(task_id), RUNNER_KEY.format("")]
        grace = 1.5 * self.heartbeat_interval
        ended = time.time()
        extra: list[str] = []
        for k, v in (detail or {}).items():
            extra += [k, v]

        def op(r: redis.Redis) -> None:
            assert self._finish is not None
            deadline = time.monotonic() + 2 * grace
            while True:
                # Past the deadline (a process that beats cannot get there): an
                # unsure run counts as gone, rather than this end never recorded.
                late = time.monotonic() > deadline
                args = [
                    attempt,
                    outcome.value,
                    ended,
                    (error or "")[:500],
                    f"{countdown:.3f}" if countdown is not None else "",
                    -1 if late else grace,
                    ttl(self.retention.finished),
                    ttl(self.retention.unfinished),
                    *extra,
                ]
                # -2: another run's process has not been seen since this run began,
                # and not missed long enough to be gone: wait for its next beat.
                if self._finish(keys=keys, args=args, client=r) != -2 or late:
                    return
                time.sleep(self.heartbeat_interval / 4)

        try:
            self._do(outcome.value, op)
        except LedgerUnavailable as exc:
            logger.error(
                "the end of task %s attempt %d (%s) is not recorded yet, written when Redis "
                "answers: %s",
                task_id,
                attempt,
                outcome.value,
                exc,
            )
            with self._lock:
                self._pending.append(op)
        finally:
            self._track(-1)

    def flush(self) -> int:
        """Write the ends of runs that Redis did not take when they happened (in order,
        until one fails again); how many are left."""
        with self._lock:
            pending, self._pending = self._pending, []
        for i, op in enumerate(pending):
            try:
                self._do("a pending end", op)
            except LedgerUnavailable:
                with self._lock:
                    self._pending[:0] = pending[i:]
                break
        with self._lock:
            return len(self._pending)

    # --- reads ------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord | None:
        raw = self._do("get", lambda r: r.hgetall(TASK_KEY.format(task_id)), write=False)
        # decode_responses=True: every key and value is a str.
        return parse_record(cast("dict[str, str]", raw)) if raw else None

    def tasks(
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

        def page(r: redis.Redis) -> tuple[list[TaskRecord], int]:
            ids: list[tuple[str, float, Implementation]] = []
            for impl in impls:
                found = r.zrangebyscore(
                    INDEX_KEY.format(impl.value),
                    since if since is not None else "-inf",
                    "+inf",
                    start=0,
                    num=limit,
                    withscores=True,
                )
                ids += [(t, score, impl) for t, score in cast("list[tuple[str, float]]", found)]
            ids.sort(key=lambda found: found[1])
            ids = ids[:limit]
            pipe = r.pipeline(transaction=False)
            for task_id, _, _ in ids:
                pipe.hgetall(TASK_KEY.format(task_id))
            raws = pipe.execute()
            # An entry whose record expired (the index outlives it): dropped here, as
            # it is read, so that the page holds live records.
            gone = [(t, impl) for (t, _, impl), raw in zip(ids, raws, strict=True) if not raw]
            if gone:
                pipe = r.pipeline(transaction=False)
                for task_id, impl in gone:
                    pipe.zrem(INDEX_KEY.format(impl.value), task_id)
                pipe.execute()
            return [parse_record(raw) for raw in raws if raw and "task_id" in raw], len(gone)

        def op(r: redis.Redis) -> list[TaskRecord]:
            records, gone = page(r)
            for _ in range(10):  # bounded: each round drops what it found gone
                if not gone or len(records) >= limit:
                    break
                records, gone = page(r)
            return records

        return self._do("list", op, write=False) or []

    def records(self, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
        """These tasks' records (the ones the ledger holds), in one round trip."""

        def op(r: redis.Redis) -> dict[str, TaskRecord]:
            pipe = r.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.hgetall(TASK_KEY.format(task_id))
            raws = pipe.execute()
            return {
                t: parse_record(raw)
                for t, raw in zip(task_ids, raws, strict=True)
                if raw and "task_id" in raw
            }

        return self._do("records", op, write=False) or {}

    def runners(self, *, seen_since: float | None = None) -> list[RunnerRecord]:
        """The processes that ran tasks, from their heartbeats (the last hour by default)."""
        floor = seen_since if seen_since is not None else time.time() - RUNNER_TTL

        def op(r: redis.Redis) -> list[RunnerRecord]:
            ids = r.zrangebyscore(RUNNERS_KEY, floor, "+inf")
            pipe = r.pipeline(transaction=False)
            for rid in ids:
                pipe.hgetall(RUNNER_KEY.format(rid))
            return [parse_runner(raw) for raw in pipe.execute() if raw and "runner" in raw]

        return self._do("runners", op, write=False) or []

    def check(self) -> None:
        """Raise ``LedgerUnavailable`` (with the reason, for the log) unless Redis answers."""
        self._do("ping", lambda r: r.ping(), write=False)

    def ping(self) -> bool:
        try:
            self.check()
        except LedgerUnavailable:
            return False
        return True


class AsyncLedger:
    """What an API does on the request path: one round trip, on the event loop.

    No thread-pool trip (and so none of AnyIO's tokens) for the bookkeeping: the
    instrument must not change what it measures."""

    def __init__(
        self,
        client: redis.asyncio.Redis | None,
        implementation: Implementation,
        *,
        best_effort: bool = False,
        off: str = "no Redis client",
        retention: Retention = KEEP_ALL,
    ) -> None:
        self.client = client
        self.implementation = implementation
        self.best_effort = best_effort
        self.off = off
        self.retention = retention

    async def forget(self, task_ids: Sequence[str]) -> None:
        """Remove tasks that were never handed over (their kick failed)."""
        if self.client is None or not task_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        forget_commands(pipe, self.implementation, task_ids)
        await pipe.execute()

    async def record_new(self, *kinds: str, detail: Mapping[str, str] | None = None) -> list[str]:
        """Record a request's tasks as queued, in one round trip; their new ids, in order."""
        tasks = new_tasks(kinds, detail)
        if self.client is None:
            if self.best_effort:
                return [t.task_id for t in tasks]
            raise LedgerUnavailable(f"the ledger is off: {self.off}")
        pipe = self.client.pipeline(transaction=False)
        owner = owner_of(self.implementation)
        queue_commands(pipe, self.implementation, tasks, owner, time.time(), self.retention)
        try:
            await pipe.execute()
        except redis.RedisError as exc:
            if not self.best_effort:
                raise LedgerUnavailable(
                    "the ledger cannot be reached", f"the ledger is unavailable (Redis: {exc})"
                ) from exc
            logger.warning("ledger queued skipped, Redis unavailable: %s", exc)
        return [t.task_id for t in tasks]
