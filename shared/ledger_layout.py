"""The ledger's layout in Redis: its keys, the fields a task starts with, the scripts
that start and end a run, and how a hash reads back as a record.

One hash per task (``ledger:task:<id>``) and one sorted set per implementation
(``ledger:index:<impl>``, scored by the time the task was first seen). A task's
hash expires (``Retention``): ``unfinished`` seconds after its last change while it
has not finished, ``finished`` seconds after it finished; the index drops entries
older than both together on every hand-over, so neither grows without bound. A run's
fields are ``attempt.<n>.*``; a task's detail is ``detail.*``. ``shared.ledger``
writes and reads through these (giving a task up writes its fields itself).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from redis.typing import EncodableT, FieldT

from shared.heartbeat import runner_id
from shared.models import Implementation, Run, RunnerRecord, TaskRecord, TaskState
from shared.services import Delivery, delivery_of
from shared.settings import Retention

# A hash's fields as redis-py takes them.
Fields = dict[FieldT, EncodableT]

TASK_KEY = "ledger:task:{}"
INDEX_KEY = "ledger:index:{}"


@dataclass(frozen=True)
class NewTask:
    """A task an API hands over, as the ledger first records it."""

    task_id: str
    kind: str
    detail: Mapping[str, str] | None = None
    # The task scheduled just before it by the same request.
    after: str | None = None


def new_tasks(kinds: Sequence[str], detail: Mapping[str, str] | None = None) -> list[NewTask]:
    """A request's tasks, in the order scheduled, as the ledger first records them:
    a new id each, each naming the one scheduled before it."""
    ids = [str(uuid.uuid4()) for _ in kinds]
    return [
        NewTask(task_id, str(kind), detail, after=ids[i - 1] if i else None)
        for i, (task_id, kind) in enumerate(zip(ids, kinds, strict=True))
    ]


def owner_of(implementation: Implementation) -> str | None:
    """Who holds a task until it runs: the API process itself, where tasks are
    held in process memory (if it dies first, the ledger shows who lost them)."""
    return runner_id() if delivery_of(implementation) == Delivery.in_process else None


def _queued_fields(
    implementation: Implementation, task: NewTask, now: float, owner: str | None
) -> Fields:
    fields: Fields = {
        "task_id": task.task_id,
        "implementation": implementation.value,
        "kind": task.kind,
        "state": TaskState.queued.value,
        "attempts": 0,
        "retries": 0,
        "running_count": 0,
        "queued_at": now,
        "updated_at": now,
    }
    if owner is not None:
        fields["runner"] = owner
    if task.after is not None:
        fields["after"] = task.after
    fields.update({f"detail.{k}": v for k, v in (task.detail or {}).items()})
    return fields


def ttl(seconds: float) -> int:
    """A retention as Redis's EXPIRE takes it: whole seconds, 0 for ever."""
    return math.ceil(seconds) if seconds > 0 else 0


def queue_commands(
    pipe: redis.client.Pipeline | redis.asyncio.client.Pipeline,
    implementation: Implementation,
    tasks: Sequence[NewTask],
    owner: str | None,
    now: float,
    retention: Retention,
) -> None:
    """The commands that record tasks as queued: one pipeline, one round trip."""
    index = INDEX_KEY.format(implementation.value)
    for task in tasks:
        key = TASK_KEY.format(task.task_id)
        pipe.hset(key, mapping=_queued_fields(implementation, task, now, owner))
        if unfinished := ttl(retention.unfinished):
            pipe.expire(key, unfinished)
    pipe.zadd(index, {t.task_id: now for t in tasks})
    if (horizon := retention.index_horizon) is not None:
        pipe.zremrangebyscore(index, "-inf", f"({now - horizon}")


def forget_commands(
    pipe: redis.client.Pipeline | redis.asyncio.client.Pipeline,
    implementation: Implementation,
    task_ids: Sequence[str],
) -> None:
    for task_id in task_ids:
        pipe.delete(TASK_KEY.format(task_id))
    pipe.zrem(INDEX_KEY.format(implementation.value), *task_ids)


# One round trip for the start of a run, atomic: the attempt number and the run's
# record come from the same increment. A task the ledger does not know (Beat's,
# never queued through an API; or one Redis forgot) is created by its first run.
START = """
local key, index = KEYS[1], KEYS[2]
local task_id, impl, kind, now, runner = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local unfinished_ttl = tonumber(ARGV[6])
if redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, 'task_id', task_id, 'implementation', impl, 'kind', kind,
             'queued_at', now, 'attempts', 0, 'retries', 0, 'running_count', 0)
  redis.call('ZADD', index, now, task_id)
end
local n = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HINCRBY', key, 'running_count', 1)
redis.call('HSETNX', key, 'first_started_at', now)
local a = 'attempt.' .. n .. '.'
redis.call('HSET', key, 'state', 'running', 'started_at', now, 'updated_at', now,
           'runner', runner, a .. 'started_at', now, a .. 'runner', runner)
if unfinished_ttl > 0 then redis.call('EXPIRE', key, unfinished_ttl)
else redis.call('PERSIST', key) end
return {n, tonumber(redis.call('HGET', key, 'retries') or 0)}
"""

# The end of run n. The runs still going are counted afresh: another run that has
# not ended is still going if its process has been seen alive (a heartbeat) since
# run n started; gone if it has not been seen for ``grace`` seconds (a heartbeat
# would have come by now); unsure otherwise: then nothing is written and -2 comes
# back, and the caller asks again a moment later (at most a heartbeat). A process
# that died before run n began (the crash that caused a redelivery) cannot have
# been seen since; one that runs a duplicate will be within one heartbeat. The
# dead runs are closed as "abandoned". The state becomes final (succeeded if any
# run succeeded) once no run is left. If Redis forgot the task meanwhile, nothing
# is recreated. The record then expires: ``finished_ttl`` once its state is final,
# ``unfinished_ttl`` while it is not (0: kept for ever). The runner keys are read
# by name (not declared in KEYS): fine on one Redis, not on a cluster.
FINISH = """
local key, runner_prefix = KEYS[1], KEYS[2]
local n, outcome, now, err, retry_in, grace = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local finished_ttl, unfinished_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
if redis.call('EXISTS', key) == 0 then return -1 end
local a = 'attempt.' .. n .. '.'
local my_start = tonumber(redis.call('HGET', key, a .. 'started_at') or now)
local attempts = tonumber(redis.call('HGET', key, 'attempts') or 0)
local left, gone = 0, {}
for k = 1, attempts do
  local b = 'attempt.' .. k .. '.'
  if k ~= tonumber(n) and redis.call('HEXISTS', key, b .. 'started_at') == 1
     and redis.call('HEXISTS', key, b .. 'ended_at') == 0 then
    local runner = redis.call('HGET', key, b .. 'runner') or ''
    local seen = tonumber(redis.call('HGET', runner_prefix .. runner, 'seen_at') or 0)
    local stopped = redis.call('HEXISTS', runner_prefix .. runner, 'stopped_at')
    if stopped == 0 and seen > my_start then
      left = left + 1
    elseif stopped == 1 or tonumber(now) - seen > tonumber(grace) then
      table.insert(gone, {b, seen})
    else
      return -2
    end
  end
end
for _, g in ipairs(gone) do
  redis.call('HSET', key, g[1] .. 'ended_at', math.max(g[2], 0), g[1] .. 'outcome', 'abandoned')
end
redis.call('HSET', key, a .. 'ended_at', now, a .. 'outcome', outcome, 'updated_at', now)
redis.call('HSET', key, 'running_count', left)
if err ~= '' then redis.call('HSET', key, 'error', err) end
if outcome == 'retrying' then
  redis.call('HINCRBY', key, 'retries', 1)
  redis.call('HSET', key, 'detail.retry_in', retry_in)
end
if outcome == 'succeeded' then redis.call('HSET', key, 'outcome', 'succeeded') end
for i = 9, #ARGV, 2 do redis.call('HSET', key, 'detail.' .. ARGV[i], ARGV[i + 1]) end
local keep = unfinished_ttl
if left == 0 then
  local final = outcome
  if redis.call('HGET', key, 'outcome') == 'succeeded' then final = 'succeeded' end
  redis.call('HSET', key, 'state', final)
  if final == 'succeeded' or final == 'failed' then
    redis.call('HSET', key, 'finished_at', now)
    keep = finished_ttl
  end
end
if keep > 0 then redis.call('EXPIRE', key, keep) else redis.call('PERSIST', key) end
return left
"""


def parse_record(raw: Mapping[str, str]) -> TaskRecord:
    detail: dict[str, str] = {}
    runs: dict[int, dict[str, Any]] = {}
    fields: dict[str, Any] = {}
    for k, v in raw.items():
        if k.startswith("detail."):
            detail[k.removeprefix("detail.")] = v
        elif k.startswith("attempt."):
            _, n, name = k.split(".", 2)
            runs.setdefault(int(n), {"attempt": int(n)})[name] = v
        elif k != "outcome":  # the sticky "some run succeeded" flag: in the state already
            fields[k] = v
    return TaskRecord.model_validate(
        {
            **fields,
            "detail": detail,
            "runs": [Run.model_validate(runs[n]) for n in sorted(runs)],
        }
    )


def parse_runner(raw: Mapping[str, str]) -> RunnerRecord:
    return RunnerRecord.model_validate(raw)
