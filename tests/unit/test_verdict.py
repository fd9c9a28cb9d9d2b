"""The one rule that decides what became of a task (``shared.verdict``), on
synthetic ledger records: no process, no Redis, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from shared.models import Implementation, Run, RunnerRecord, TaskRecord, TaskState
from shared.redelivery import Redelivery
from shared.verdict import (
    Observation,
    Verdict,
    judge,
)
from shared.work import count_effect_lines, count_skipped_writes

NOW = 1000.0
BG, CELERY = Implementation.bg, Implementation.celery


def rec(task_id: str, impl: Implementation, state: str, **kw: Any) -> TaskRecord:
    runs = kw.pop("runs", [])
    return TaskRecord(
        task_id=task_id,
        implementation=impl,
        kind=kw.pop("kind", "notification"),
        state=TaskState(state),
        queued_at=kw.pop("queued_at", 900.0),
        runs=[Run(**r) for r in runs],
        **kw,
    )


def runner(rid: str, impl: Implementation = CELERY, **kw: Any) -> RunnerRecord:
    return RunnerRecord(
        runner=rid,
        implementation=impl,
        role="worker" if impl == CELERY else "bg-api",
        started_at=kw.pop("started_at", 800.0),
        seen_at=kw.pop("seen_at", NOW - 0.5),
        **kw,
    )


def observe(records: list[TaskRecord], runners: list[RunnerRecord], **kw: Any) -> Observation:
    kw.setdefault("redelivery", Redelivery("redis", visibility_timeout=10, restore_interval=1))
    return Observation(now=kw.pop("now", NOW), records=records, runners=runners, **kw)


def verdict_of(task_id: str, obs: Observation) -> Verdict:
    return judge(obs).tasks[task_id].verdict


# --- BackgroundTasks ----------------------------------------------------------------------


def test_bg_task_on_a_dead_runner_is_lost_at_once() -> None:
    dead = runner("h:1:a", BG, seen_at=NOW - 5)  # three heartbeats missed
    live = runner("h:2:b", BG)
    records = [
        rec("n", BG, "running", runner="h:1:a", runs=[{"attempt": 1, "runner": "h:1:a"}]),
        rec("l", BG, "queued", runner="h:1:a", after="n", kind="log"),
        rec("m", BG, "queued", runner="h:2:b"),
    ]
    result = judge(observe(records, [dead, live]))
    assert result.tasks["n"].verdict == Verdict.lost
    assert result.tasks["l"].verdict == Verdict.lost  # queued behind it in the dead process
    assert result.tasks["m"].verdict == Verdict.in_flight  # another process, alive
    assert result.of(BG).lost == 2 and result.of(BG).balanced


def test_bg_runner_that_stopped_cleanly_is_gone_too() -> None:
    # A graceful shutdown whose timeout cut the task off: the process recorded its exit.
    stopped = runner("h:1:a", BG, seen_at=NOW - 0.1, stopped_at=NOW - 0.1)
    records = [rec("n", BG, "running", runner="h:1:a")]
    assert verdict_of("n", observe(records, [stopped])) == Verdict.lost


def test_bg_task_queued_behind_a_failure_is_skipped_not_lost() -> None:
    live = runner("h:1:a", BG)
    records = [
        rec("n", BG, "failed", runner="h:1:a", error="TransientNotificationError"),
        rec("l", BG, "queued", runner="h:1:a", after="n", kind="log", queued_at=900.0),
    ]
    result = judge(observe(records, [live]))
    assert result.tasks["n"].verdict == Verdict.failed
    assert result.tasks["l"].verdict == Verdict.skipped
    # ...and still skipped once its process is gone: the failure is why it never ran.
    gone = judge(observe(records, [runner("h:1:a", BG, seen_at=NOW - 60)]))
    assert gone.tasks["l"].verdict == Verdict.skipped
    assert gone.of(BG).skipped == 1 and gone.of(BG).lost == 0


def test_unknown_runner_gets_one_stale_period_then_is_gone() -> None:
    # Redis restarted and the heartbeat registry is empty for a moment.
    fresh = rec("n", BG, "running", runner="h:9:z", updated_at=NOW - 1)
    old = rec("o", BG, "running", runner="h:9:z", updated_at=NOW - 30)
    result = judge(observe([fresh, old], []))
    assert result.tasks["n"].verdict == Verdict.in_flight
    assert result.tasks["o"].verdict == Verdict.lost


# --- Celery -----------------------------------------------------------------------------------


def orphan(started: float) -> TaskRecord:
    return rec(
        "n",
        CELERY,
        "running",
        runner="w:1:a",
        started_at=started,
        attempts=1,
        runs=[{"attempt": 1, "runner": "w:1:a", "started_at": started}],
    )


def test_celery_task_of_a_dead_worker_awaits_redelivery_inside_the_horizon() -> None:
    dead = runner("w:1:a", seen_at=995.0)
    free = runner("w:2:b", started_at=996.0)  # the restarted worker, idle
    # Delivered at 992: Redis gives it back at 992 + 10 (visibility) + 1 (scan) = 1003.
    obs = observe([orphan(992.0)], [dead, free])
    result = judge(obs)
    assert result.tasks["n"].verdict == Verdict.awaiting_redelivery
    assert not result.settled


def test_celery_task_past_the_horizon_with_a_free_worker_is_lost() -> None:
    dead = runner("w:1:a", seen_at=975.0)
    free = runner("w:2:b", started_at=976.0)
    # Due at 970 + 11 = 981; a free worker since 976; now 1000: 19 s > slack (3 s).
    assert verdict_of("n", observe([orphan(970.0)], [dead, free])) == Verdict.lost


def test_celery_task_past_the_horizon_waits_while_every_worker_is_busy() -> None:
    dead = runner("w:1:a", seen_at=975.0)
    busy = runner("w:2:b", started_at=976.0)
    other = rec(
        "x",
        CELERY,
        "running",
        runner="w:2:b",
        runs=[{"attempt": 1, "runner": "w:2:b", "started_at": 977.0}],
    )
    result = judge(observe([orphan(970.0), other], [dead, busy]))
    assert result.tasks["n"].verdict == Verdict.awaiting_redelivery
    assert result.tasks["x"].verdict == Verdict.in_flight


def test_celery_task_waits_while_no_worker_runs_at_all() -> None:
    dead = runner("w:1:a", seen_at=900.0)
    assert verdict_of("n", observe([orphan(890.0)], [dead])) == Verdict.awaiting_redelivery


def test_the_visibility_timeout_counts_from_the_delivery_not_the_restart() -> None:
    dead = runner("w:1:a", seen_at=990.0)
    free = runner("w:2:b", started_at=991.0)
    # Delivered at 975, so due at 986; the worker restarted at 991 and has been free
    # for 9 s: past the slack, though only 9 s after the restart (< the timeout).
    assert verdict_of("n", observe([orphan(975.0)], [dead, free])) == Verdict.lost


def test_stock_acks_lose_the_running_task_at_once() -> None:
    dead = runner("w:1:a", seen_at=995.0)
    stock = Redelivery("redis", visibility_timeout=10, restore_interval=1, acks_late=False)
    assert verdict_of("n", observe([orphan(994.0)], [dead], redelivery=stock)) == Verdict.lost


def test_rabbitmq_hands_the_task_back_when_the_connection_drops() -> None:
    dead = runner("w:1:a", seen_at=990.0)
    free = runner("w:2:b", started_at=800.0)
    amqp = Redelivery("rabbitmq", visibility_timeout=60, restore_interval=5)
    # No visibility timeout: due at the death (990); free worker all along; 10 s > slack.
    assert verdict_of("n", observe([orphan(989.0)], [dead, free], redelivery=amqp)) == Verdict.lost
    # On Redis the same task would still be inside its horizon (989 + 10 + 1 = 1000).
    assert verdict_of("n", observe([orphan(989.0)], [dead, free])) == Verdict.awaiting_redelivery


def test_a_killed_workers_idle_process_is_no_free_worker_for_the_task_it_died_with() -> None:
    # The worker's two processes die together at ~990: the one that ran the task, and
    # an idle one whose last beat (990.8) still looks alive for a few seconds after.
    dead = runner("w:1:a", seen_at=990.0)
    sibling = runner("w:1:b", started_at=800.0, seen_at=990.8)
    amqp = Redelivery("rabbitmq", visibility_timeout=60, restore_interval=5)
    at = observe([orphan(989.0)], [dead, sibling], redelivery=amqp, now=993.5)
    # 3.5 s past the death, the sibling "alive": it was never seen free after the task
    # came back, so the task is not yet lost (the compose smoke read "lost" here).
    assert verdict_of("n", at) == Verdict.awaiting_redelivery
    # A worker seen free for the slack after the death: lost, as before.
    restarted = runner("w:2:c", started_at=991.0, seen_at=995.0)
    late = observe([orphan(989.0)], [dead, restarted], redelivery=amqp, now=995.5)
    assert verdict_of("n", late) == Verdict.lost


def test_queued_celery_task_is_in_flight_while_the_broker_is_down() -> None:
    free = runner("w:2:b", started_at=800.0)
    queued = rec("q", CELERY, "queued", queued_at=900.0)
    assert verdict_of("q", observe([queued], [free], broker_up_since=None)) == Verdict.in_flight
    # Broker back at 998: 2 s ago, inside the slack.
    assert verdict_of("q", observe([queued], [free], broker_up_since=998.0)) == Verdict.in_flight
    # Back at 990: a worker may have held it unacknowledged when the restart cut its
    # connection; on Redis it comes back after the visibility timeout (due 990 + 10 +
    # the 1 s scan = 1001), so at 1000 it is not lost...
    assert verdict_of("q", observe([queued], [free], broker_up_since=990.0)) == Verdict.in_flight
    # ...and it is once that and the slack (3 s) have passed with a worker free.
    later = runner("w:2:b", started_at=800.0, seen_at=1004.5)
    late = observe([queued], [later], broker_up_since=990.0, now=1005.0)
    assert verdict_of("q", late) == Verdict.lost
    # RabbitMQ requeues at once: lost past the slack already.
    amqp = Redelivery("rabbitmq", visibility_timeout=10, restore_interval=1)
    on_amqp = observe([queued], [free], broker_up_since=990.0, redelivery=amqp)
    assert verdict_of("q", on_amqp) == Verdict.lost


def test_retrying_task_is_in_flight_until_its_countdown_and_the_horizon_pass() -> None:
    free = runner("w:2:b", started_at=800.0)
    retrying = rec(
        "r",
        CELERY,
        "retrying",
        updated_at=995.0,
        attempts=1,
        retries=1,
        detail={"retry_in": "2.0"},
        runs=[{"attempt": 1, "runner": "w:2:b", "started_at": 994.0, "ended_at": 995.0}],
    )
    assert verdict_of("r", observe([retrying], [free])) == Verdict.in_flight


def test_double_delivery_whose_first_run_ends_after_the_second_started() -> None:
    # Delivered at 900, handed out again at 911 (visibility timeout) while still
    # running; run 1 ended at 915 (its write), run 2 found the line and skipped it.
    record = rec(
        "n",
        CELERY,
        "succeeded",
        attempts=2,
        runs=[
            {"attempt": 1, "runner": "w:1:a", "started_at": 900.0, "ended_at": 915.0},
            {"attempt": 2, "runner": "w:1:b", "started_at": 911.0, "ended_at": 926.0},
        ],
    )
    result = judge(observe([record], [], effects={"n": 1}, skipped_writes={"n": 1}))
    task = result.tasks["n"]
    assert (task.verdict, task.executions, task.writes, task.skipped_writes) == (
        Verdict.completed,
        2,
        1,
        1,
    )
    side = result.of(CELERY)
    assert side.executed_more_than_once == 1 and side.duplicate_effects == 0
    assert side.skipped_writes == 1


def test_a_second_run_still_going_keeps_the_task_in_flight() -> None:
    record = rec(
        "n",
        CELERY,
        "running",
        runner="w:1:b",
        attempts=2,
        running_count=1,
        runs=[
            {
                "attempt": 1,
                "runner": "w:1:a",
                "started_at": 900.0,
                "ended_at": 915.0,
                "outcome": "succeeded",
            },
            {"attempt": 2, "runner": "w:1:b", "started_at": 911.0},
        ],
    )
    obs = observe([record], [runner("w:1:a"), runner("w:1:b")], effects={"n": 1})
    assert verdict_of("n", obs) == Verdict.in_flight


def test_retries_are_not_counted_as_executions() -> None:
    record = rec("n", CELERY, "succeeded", attempts=3, retries=2)
    result = judge(observe([record], []))
    assert result.tasks["n"].executions == 1
    assert result.of(CELERY).retried == 1 and result.of(CELERY).executed_more_than_once == 0


def test_redis_restarted_empty_forgets_tasks_and_the_effect_decides() -> None:
    # The ledger is gone; task "a" wrote its line before, "b" never did.
    expected = {"a": CELERY, "b": CELERY}
    result = judge(observe([], [], expected=expected, effects={"a": 1}))
    assert result.tasks["a"].verdict == Verdict.completed
    assert result.tasks["b"].verdict == Verdict.lost
    side = result.of(CELERY)
    assert (side.accepted, side.completed, side.lost, side.missing_from_ledger) == (2, 1, 1, 2)
    assert side.balanced


def test_only_the_expected_tasks_are_judged() -> None:
    records = [rec("a", BG, "succeeded"), rec("other", BG, "succeeded")]
    result = judge(observe(records, [], expected={"a": BG}))
    assert set(result.tasks) == {"a"}


@pytest.mark.parametrize(
    ("state", "verdict"), [("succeeded", Verdict.completed), ("failed", Verdict.failed)]
)
def test_final_states_are_final_whatever_the_processes(state: str, verdict: Verdict) -> None:
    assert verdict_of("t", observe([rec("t", CELERY, state)], [])) == verdict


def test_effects_unknown_means_no_duplicate_counts() -> None:
    side = judge(observe([rec("t", BG, "succeeded")], [])).of(BG)
    assert side.duplicate_effects is None and side.extra_writes is None


def test_reading_the_log_file_and_the_process_output() -> None:
    lines = [
        "2026-12-01T00:00:00.000+00:00 [t-1] notification sent to a@example.com",
        "2026-12-01T00:00:01.000+00:00 [t-1] notification sent to a@example.com",
        "2026-12-01T00:00:02.000+00:00 [t-2] item created: x [not a tag] (1.00)",
        "a line with no tag",
    ]
    assert count_effect_lines(lines) == {"t-1": 2, "t-2": 1}
    output = [
        "[2026-12-01 00:00:00,000: INFO/ForkPoolWorker-1] task t-1: log line already "
        "written, skipping",
        "INFO shared.work: task t-2: notification to a@example.com already sent, skipping",
        "task t-3 started",
    ]
    assert count_skipped_writes(output) == {"t-1": 1, "t-2": 1}


def test_queued_task_a_dead_worker_may_have_prefetched_waits_for_the_redelivery() -> None:
    # Reserved (unacked, not started) by the worker that died at 995: on Redis it
    # comes back after the visibility timeout, so it is not lost at 1000.
    dead = runner("w:1:a", seen_at=995.0)
    free = runner("w:2:b", started_at=996.0)
    queued = rec("q", CELERY, "queued", queued_at=990.0)
    assert verdict_of("q", observe([queued], [dead, free])) == Verdict.in_flight
    # ...and lost once that horizon and the slack have passed with a worker free.
    later = runner("w:2:b", started_at=996.0, seen_at=1010.5)
    assert verdict_of("q", observe([queued], [dead, later], now=1011.0)) == Verdict.lost


def test_a_written_effect_completes_a_task_whose_end_the_ledger_missed() -> None:
    # The run finished while Redis was down: "running" forever in the ledger, but
    # its line is in the log, the work's last step.
    live = runner("h:1:a", BG)
    record = rec("n", BG, "running", runner="h:1:a")
    assert verdict_of("n", observe([record], [live])) == Verdict.in_flight
    assert verdict_of("n", observe([record], [live], effects={"n": 1})) == Verdict.completed


def test_a_task_the_worker_gave_up_on_is_neither_lost_nor_completed() -> None:
    records = [
        rec(
            "n",
            CELERY,
            "failed",
            error="gave up after 3 deliveries (CELERY_MAX_DELIVERIES)",
            detail={"gave_up": "gave up after 3 deliveries (CELERY_MAX_DELIVERIES)"},
        ),
        rec("m", CELERY, "failed", error="TimeLimitExceeded: killed at the hard time limit"),
    ]
    result = judge(observe(records, [runner("h:1:a")]))
    assert result.tasks["n"].verdict == Verdict.gave_up
    assert "3 deliveries" in result.tasks["n"].why
    assert result.tasks["m"].verdict == Verdict.failed
    side = result.of(CELERY)
    assert (side.gave_up, side.failed, side.lost, side.completed) == (1, 1, 0, 0)
    assert side.balanced and side.settled


@pytest.mark.parametrize(
    ("fate", "verdict"),
    [("abandoned", Verdict.abandoned), ("dead-lettered", Verdict.dead_lettered)],
)
def test_a_parked_task_is_neither_lost_nor_failed_and_says_where_it_is(
    fate: str, verdict: Verdict
) -> None:
    parked = f"{fate}: now in the failed registry; to run it again: requeue n"
    records = [
        rec("n", CELERY, "failed", error=parked, detail={"fate": fate, "parked": parked}),
        # A fate the ledger does not know is a failure, not a parking.
        rec("m", CELERY, "failed", error="x", detail={"fate": "elsewhere"}),
    ]
    result = judge(observe(records, [runner("h:1:a")]))
    assert result.tasks["n"].verdict == verdict
    assert "requeue n" in result.tasks["n"].why
    assert result.tasks["m"].verdict == Verdict.failed
    side = result.of(CELERY)
    assert (side.abandoned + side.dead_lettered, side.failed, side.lost) == (1, 1, 0)
    assert side.balanced and side.settled


def test_a_task_gone_past_the_retention_is_forgotten_not_lost() -> None:
    expected = {"old": CELERY}
    # Handed over a retention ago: the ledger may have expired its record.
    late = judge(observe([], [], expected=expected, forget_after=60, expected_since=NOW - 61))
    assert late.tasks["old"].verdict == Verdict.forgotten
    assert late.summaries[CELERY].lost == 0 and late.summaries[CELERY].forgotten == 1
    # Within the retention, a record that is gone was not expired: lost (a Redis
    # restart without its data, say); with its effect written, completed.
    early = judge(observe([], [], expected=expected, forget_after=60, expected_since=NOW - 30))
    assert early.tasks["old"].verdict == Verdict.lost
    kept = judge(observe([], [], expected=expected, forget_after=None, expected_since=0.0))
    assert kept.tasks["old"].verdict == Verdict.lost
    written = judge(
        observe([], [], expected=expected, effects={"old": 1}, forget_after=60, expected_since=0)
    )
    assert written.tasks["old"].verdict == Verdict.completed


def test_a_timeout_counted_from_the_death_waits_from_the_death() -> None:
    # RQ's started-job registry expires a run from its last heartbeat, not its start.
    from_start = Redelivery("redis", visibility_timeout=10.0, restore_interval=1.0)
    from_death = Redelivery("redis", visibility_timeout=10.0, restore_interval=1.0, from_death=True)
    assert from_start.due(started_at=0.0, died_at=30.0) == 31.0
    assert from_death.due(started_at=0.0, died_at=30.0) == 41.0
