"""What a target shows, handed to ``shared.verdict``: the one way anything here counts tasks."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence

from harness.target import RUNS_THE_WORK, Target
from shared.models import Implementation, TaskRecord
from shared.verdict import (
    Judgement,
    Observation,
    Rules,
    Verdict,
    judge,
    rules,
)
from shared.work import count_skipped_writes

logger = logging.getLogger(__name__)


def rules_for(target: Target) -> Rules:
    """The rules the target's settings make (``shared.verdict.rules``)."""
    return rules(target.settings)


def expected_of(ids: Iterable[str], side: str) -> dict[str, Implementation]:
    """The tasks an observer handed to one side: ``Observation.expected``."""
    return dict.fromkeys(ids, Implementation(side))


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
        running = set(target.services)
        for service in dict.fromkeys(s for s in RUNS_THE_WORK.values() if s in running):
            for task_id, n in count_skipped_writes(target.output(service).splitlines()).items():
                skips[task_id] = skips.get(task_id, 0) + n
    rules = rules_for(target)
    if slack is not None:
        rules["slack"] = slack
    return Observation(
        now=time.time(),
        records=records,
        runners=runners,
        expected=expected,
        effects=target.effect_lines() if effects else None,
        skipped_writes=skips,
        broker_up_since=broker_up_since,
        expected_since=since,
        **rules,
    )


def _fingerprint(records: Sequence[TaskRecord]) -> tuple[tuple[str, str, int, float | None], ...]:
    return tuple(sorted((r.task_id, r.state.value, r.attempts, r.updated_at) for r in records))


def settle(
    target: Target,
    since: float,
    expected: Mapping[str, Implementation],
    *,
    quiet: float,
    cap: float,
    interval: float = 0.25,
    broker_up_since: float | None = -math.inf,
) -> tuple[Judgement, str]:
    """Watch until every task has a final verdict and the ledger has not changed for
    ``quiet`` seconds (a verdict is a reading of one moment: stillness makes sure it
    is the last one), then count once more with the effects and what the processes
    said they skipped: the final judgement, and why the watch ended.

    ``cap`` (monotonic) bounds the wait on every path, a ledger that does not
    answer included. A ledger that stops answering leaves the last judgement it
    gave (without the effects); one that never answered raises its error."""
    last, why = _watch(
        target,
        since,
        expected,
        quiet=quiet,
        cap=cap,
        interval=interval,
        broker_up_since=broker_up_since,
    )
    try:
        final = observe(target, since=since, expected=expected, broker_up_since=broker_up_since)
        return judge(final), why
    except (RuntimeError, OSError) as exc:
        return last, f"{why}; the final count could not be read ({exc}): the last one"


def _watch(
    target: Target,
    since: float,
    expected: Mapping[str, Implementation],
    *,
    quiet: float,
    cap: float,
    interval: float,
    broker_up_since: float | None = -math.inf,
) -> tuple[Judgement, str]:
    """``settle``'s watch: the ledger only, not the process output (read once, after)."""
    last_fp: object = None
    last_change = time.monotonic()
    judgement: Judgement | None = None
    while True:
        now = time.monotonic()
        try:
            obs = observe(
                target,
                since=since,
                expected=expected,
                skipped_writes=False,
                broker_up_since=broker_up_since,
            )
        except (RuntimeError, OSError) as exc:  # the API or Redis is still coming back
            logger.info("ledger not readable yet: %s", exc)
            if now >= cap:
                if judgement is None:
                    raise
                return judgement, "gave up: the ledger did not answer before the deadline"
            time.sleep(interval)
            continue
        judgement = judge(obs)
        fp = _fingerprint(obs.records)
        if fp != last_fp:
            last_fp, last_change = fp, now
        if judgement.settled and now - last_change >= quiet:
            lost = len(judgement.ids(Verdict.lost))
            return judgement, (
                f"every task has a final verdict ({lost} lost), no change for {quiet:g}s"
            )
        if now >= cap:
            return judgement, "gave up at the settle deadline: some tasks still in flight"
        time.sleep(interval)
