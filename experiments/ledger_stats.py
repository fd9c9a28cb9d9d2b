"""Counting tasks from the ledger: completed, in flight, lost, executed twice, retried.

The same arithmetic for both implementations and for every consumer (the crash
experiment, the lab): a list of ``TaskRecord`` in, counts out. Nothing here talks
to a process; the caller decides *when* in flight means lost (after the
settle period it waited for redelivery).

Definitions, all from the ledger:

- in flight: ``queued``, ``running`` or ``retrying``;
- missing: a task id the caller submitted that the ledger does not hold at all
  (Redis forgot it: a restart without persistence). One whose line is in the
  log file did its work before the ledger forgot it: not lost;
- executed more than once: ``attempts - retries > 1``. ``attempts`` counts every
  run, and a Celery retry is a run too, so the retries are taken off: what is left
  over is a redelivery (the same message run again after a crash or after the
  visibility timeout);
- retried: ``retries > 0``;
- duplicate effect: more than one line in ``LOG_FILE`` names the task (the work
  is idempotent per task id, so this should stay at zero however often a task ran);
  a skipped write is the idempotency check at work (``count_skipped_writes``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.models import IN_FLIGHT, TaskRecord, TaskState

# shared.work tags every line it writes with "[<task id>]".
_TAG = re.compile(r"\[([^\]\s]+)\]")
# ...and logs "task <id>: ... already sent/written, skipping" when its idempotency
# check finds the line there (the process output, not the log file).
_SKIP = re.compile(r"task (\S+): .*already \w+, skipping")


def executions(record: TaskRecord) -> int:
    """How many times this task was delivered and started, not counting retries."""
    return max(record.attempts - record.retries, 0)


def count_effect_lines(lines: Iterable[str]) -> Counter[str]:
    """Lines per task id in a ``LOG_FILE`` (the first ``[...]`` tag of each line)."""
    counts: Counter[str] = Counter()
    for line in lines:
        match = _TAG.search(line)
        if match:
            counts[match.group(1)] += 1
    return counts


def count_skipped_writes(lines: Iterable[str]) -> Counter[str]:
    """Per task id, how often a run found its effect already written and skipped it."""
    counts: Counter[str] = Counter()
    for line in lines:
        match = _SKIP.search(line)
        if match:
            counts[match.group(1)] += 1
    return counts


@dataclass(frozen=True)
class LedgerStats:
    total: int
    succeeded: int
    failed: int
    queued: int
    running: int
    retrying: int
    missing: int
    # Missing from the ledger, but the log file holds its line: it did its work.
    missing_done: int
    executed_more_than_once: int
    retried: int
    # Tasks with more than one effect line, and the extra lines they wrote; None
    # when no effect counts were given.
    duplicate_effects: int | None
    extra_effect_lines: int | None
    first_queued_at: float | None
    last_finished_at: float | None
    # Kept for drill-down (which ones), not counted twice anywhere.
    in_flight_ids: tuple[str, ...] = field(default=())
    missing_ids: tuple[str, ...] = field(default=())
    missing_done_ids: tuple[str, ...] = field(default=())
    redelivered_ids: tuple[str, ...] = field(default=())

    @property
    def in_flight(self) -> int:
        return self.queued + self.running + self.retrying

    @property
    def unfinished(self) -> int:
        """In flight, or gone from the ledger without a trace of its work: lost, once the
        caller has waited long enough."""
        return self.in_flight + self.missing - self.missing_done

    @property
    def unfinished_ids(self) -> tuple[str, ...]:
        done = set(self.missing_done_ids)
        return self.in_flight_ids + tuple(t for t in self.missing_ids if t not in done)

    @property
    def done(self) -> int:
        """Succeeded, counting the ones the ledger forgot after their work was done."""
        return self.succeeded + self.missing_done

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            in_flight=self.in_flight,
            unfinished=self.unfinished,
            unfinished_ids=self.unfinished_ids,
            done=self.done,
        )
        return data


def summarize(
    records: Iterable[TaskRecord],
    *,
    expected_ids: Collection[str] | None = None,
    effect_lines: Mapping[str, int] | None = None,
) -> LedgerStats:
    """Count ``records``; with ``expected_ids``, only those tasks, and the absent ones as missing.

    ``effect_lines``: lines per task id in the log file (``count_effect_lines``).
    """
    by_id = {r.task_id: r for r in records}
    if expected_ids is not None:
        wanted = set(expected_ids)
        missing_ids = tuple(sorted(wanted - by_id.keys()))
        by_id = {k: v for k, v in by_id.items() if k in wanted}
    else:
        missing_ids = ()
    chosen = list(by_id.values())
    states = Counter(r.state for r in chosen)
    redelivered = tuple(r.task_id for r in chosen if executions(r) > 1)
    dup_tasks: int | None = None
    extra_lines: int | None = None
    if effect_lines is not None:
        extras = [effect_lines.get(task_id, 0) - 1 for task_id in by_id]
        dup_tasks = sum(1 for e in extras if e > 0)
        extra_lines = sum(e for e in extras if e > 0)
    missing_done_ids = tuple(t for t in missing_ids if (effect_lines or {}).get(t, 0) > 0)
    queued_times = [r.queued_at for r in chosen if r.queued_at is not None]
    finished_times = [r.finished_at for r in chosen if r.finished_at is not None]
    return LedgerStats(
        total=len(chosen) + len(missing_ids),
        succeeded=states[TaskState.succeeded],
        failed=states[TaskState.failed],
        queued=states[TaskState.queued],
        running=states[TaskState.running],
        retrying=states[TaskState.retrying],
        missing=len(missing_ids),
        missing_done=len(missing_done_ids),
        executed_more_than_once=len(redelivered),
        retried=sum(1 for r in chosen if r.retries > 0),
        duplicate_effects=dup_tasks,
        extra_effect_lines=extra_lines,
        first_queued_at=min(queued_times) if queued_times else None,
        last_finished_at=max(finished_times) if finished_times else None,
        in_flight_ids=tuple(r.task_id for r in chosen if r.state in IN_FLIGHT),
        missing_ids=missing_ids,
        missing_done_ids=missing_done_ids,
        redelivered_ids=redelivered,
    )
