"""What a target shows, handed to ``shared.verdict``: the one way anything here counts tasks."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping

from harness.target import RUNS_THE_WORK, Target
from shared.models import Implementation
from shared.verdict import Judgement, Observation, Redelivery, count_skipped_writes, judge


def slack_for(target: Target) -> float:
    """How long a free worker may take to pick up a due task: a few heartbeats and scans."""
    s = target.settings
    return max(3.0, 3 * s.runner_heartbeat_seconds, 2 * s.celery_restore_interval)


def observe(
    target: Target,
    *,
    since: float | None = None,
    expected: Mapping[str, Implementation] | None = None,
    effects: bool = True,
    skipped_writes: bool = True,
    broker_up_since: float | None = -math.inf,
    slack: float | None = None,
) -> Observation:
    """Read the ledger, the runners and (optionally) the effects and the process
    output, now. ``since``: tasks queued from then on (wall clock)."""
    ledger = target.ledger()
    records = ledger.records(since=since)
    if expected is not None:
        records = [r for r in records if r.task_id in expected]
    runners = ledger.runners()
    skips: dict[str, int] | None = None
    if skipped_writes:
        skips = {}
        for service in dict.fromkeys(RUNS_THE_WORK.values()):
            for task_id, n in count_skipped_writes(target.output(service).splitlines()).items():
                skips[task_id] = skips.get(task_id, 0) + n
    settings = target.settings
    return Observation(
        now=time.time(),
        records=records,
        runners=runners,
        expected=expected,
        effects=target.effect_lines() if effects else None,
        skipped_writes=skips,
        redelivery=Redelivery.of(settings),
        broker_up_since=broker_up_since,
        stale_after=3 * settings.runner_heartbeat_seconds,
        slack=slack if slack is not None else slack_for(target),
    )


def verdict(target: Target, **kwargs: object) -> Judgement:
    """``judge(observe(target, ...))``."""
    return judge(observe(target, **kwargs))  # type: ignore[arg-type]


def expected_of(ids: Iterable[str], side: str) -> dict[str, Implementation]:
    return dict.fromkeys(ids, Implementation(side))
