"""Heavy work, more processes, and a short soak, against real processes.

No wall-clock thresholds: the heavy test compares two measurements of one run,
the rest count tasks."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from experiments.crash.scenarios import Params
from experiments.reporting.soak import WORK
from experiments.soak_plan import copies, faults_for
from harness.procs import wait_until
from harness.stacks import Where
from shared.services import DEFAULT_IMPLEMENTATIONS, IMPLEMENTATIONS, Delivery, Implementation
from tests.integration.conftest import StackFactory, experiment_report, ledger_record, run_ok

pytestmark = pytest.mark.slow


@pytest.mark.serial
def test_a_heavy_def_task_slows_the_background_tasks_api_not_the_celery_one(
    tmp_path: Path,
) -> None:
    # Two cores' worth of jobs: one process's GIL computes one core's worth at most,
    # so its backlog grows for certain. At exactly one core's worth whether it grows
    # is a coin toss (the same quick run measured bg's p50 under load from 12 ms to
    # 694 ms), and the comparison below with it. (The calibration errs only towards
    # longer jobs: it keeps the fastest of its tries.)
    args = ("--quick", "--load", "2", "--configs", "bg-def,celery")
    data = experiment_report("heavy", tmp_path, *args)
    bg, celery = data["runs"]["bg-def"], data["runs"]["celery"]
    for r in (bg, celery):
        assert r["done"] == r["scheduled"] > 0 and r["probe_errors"] == 0
    # Computing in the API process: its own probe waits for the interpreter...
    assert bg["load_ms"]["p50"] > 3 * celery["load_ms"]["p50"]
    # ...far more, against its own idle, than the Celery API does against its own...
    assert bg["p50_ratio"] > 3 * celery["p50_ratio"]
    # ...and its tail is longer too. Medians for the ratios: the Celery API shares
    # the machine's cores with a worker computing a core's worth, so on a small or
    # busy machine its p99 under load grows as well (a CI run measured 8x), and the
    # idle p99 of a quick run is its 2nd-slowest of 200 probes, mostly noise.
    assert bg["load_ms"]["p99"] > celery["load_ms"]["p99"]


def test_two_workers_take_tasks_from_one_queue(make_stack: StackFactory) -> None:
    stack = make_stack(workers=2, worker_concurrency=1, notification_delay_seconds=0.3)
    stack.start_all(("redis", "celery-api", "worker", "worker-2"))
    ids = []
    for i in range(6):
        r = httpx.post(f"{stack.url('celery')}/send-notification/q{i}@example.com", timeout=10)
        assert r.status_code == 202
        ids.append(r.json()["task_ids"][0])

    def all_done() -> list[str] | None:
        records = [ledger_record(stack, t) for t in ids]
        done = all(r is not None and r.state == "succeeded" for r in records)
        return [r.runner or "" for r in records if r is not None] if done else None

    runners = wait_until(all_done, 30, "six notifications done")
    assert {stack.service_of(r) for r in runners} == {"worker", "worker-2"}


def test_killing_one_of_two_bg_api_processes_loses_its_own_tasks_only(tmp_path: Path) -> None:
    params = Params(tasks=6, delay=2.0, visibility=3.5, margin=2.0)
    o = run_ok("bg-kill-one-process", params, Where(workdir=tmp_path))
    # The requests landed on both processes; the one killed held some of the tasks...
    assert 0 < len(o.held_by_killed) < o.submitted
    # ...and exactly those were lost: the other process finished its own.
    assert sorted(o.lost_ids) == sorted(o.held_by_killed)
    assert o.completed == o.submitted - o.lost


# Where a broker implementation may lose a task it never started, and why: a window
# its broker leaves between handing a message over and holding it unacknowledged.
# Celery on Redis: kombu pops a message (BRPOP), then records it unacknowledged; a
# worker SIGKILLed between the two loses it (celery/celery#7950; seen here in 3 of
# about 12 runs, one task each time, a worker kill just after the task was queued).
# taskiq's stream broker has no such window: XREADGROUP makes the message pending as
# it hands it over.
MAY_LOSE_UNSTARTED_PER_KILL = {Implementation.celery: 1}


def test_a_short_soak_accounts_for_every_task(tmp_path: Path) -> None:
    # The chapter's two: the soak over every implementation is the benchmark's (five
    # stacks' processes overran the test's time on a loaded machine).
    chapter = ",".join(DEFAULT_IMPLEMENTATIONS)
    args = ["--duration", "20", "--fault-every", "4", "--rate", "4", "--delay", "0.3"]
    data = experiment_report("soak", tmp_path, *args, "--implementations", chapter)
    # The implementations asked for; every kind of fault, each hitting all.
    assert list(data["implementations"]) == list(DEFAULT_IMPLEMENTATIONS)
    assert [f["kind"] for f in data["faults"]][:4] == faults_for("redis")
    for impl, s in data["implementations"].items():
        spec = IMPLEMENTATIONS[Implementation(impl)]
        assert s["accepted"] > 0 and s["in_flight_at_the_end"] == 0, impl
        assert s["accepted"] == s["completed"] + s["lost"] + s["failed"] + s["skipped"], impl
        assert s["duplicate_effects"] == 0, impl
        killed = [f for f in s["faults"] if f["kind"] == WORK]
        # Each such fault killed a copy of what runs its work.
        assert killed and all(copies(spec.runs_the_work, f["services"]) for f in killed), impl
        if spec.delivery == Delivery.in_process:
            # What its killed processes held, and nothing else.
            assert s["lost"] == s["lost_held_by_a_killed_process"], (impl, s)
            continue
        # The broker redelivers: nothing it started is lost, nor anything else but a
        # task never started, where its broker leaves that window open.
        allowed = MAY_LOSE_UNSTARTED_PER_KILL.get(Implementation(impl), 0) * len(killed)
        assert s["lost"] == s["lost_never_started"] <= allowed, (impl, s)
