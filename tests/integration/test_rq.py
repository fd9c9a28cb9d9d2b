"""RQ's own claims, against real processes: a work horse killed under its worker is
abandoned at once (or retried, with ``Retry``); a whole worker killed (its horse
too) is found by a later worker's registry cleanup once its heartbeat expires; the
Procfile's demo settings settle a killed worker's notification within a minute; a
dead Redis is a quick 503."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from harness.local import LocalStack
from harness.ports import free_port
from harness.procs import wait_until
from shared.models import Implementation, TaskRecord
from tests.integration.conftest import StackFactory, ledger_record, log_lines, wait_for_state
from tests.integration.procfile import (
    ProcfileStack,
    a_notification_running,
    procfile_stack,
)

pytestmark = pytest.mark.slow

# Whole seconds (RQ's): a dead worker's job expires 1 + 3 s after its last heartbeat,
# and an idle worker cleans the registries every second.
QUICK = {
    "rq_job_monitoring_interval_seconds": 1,
    "rq_abandoned_grace_seconds": 3,
    "rq_maintenance_interval_seconds": 1,
    "retry_backoff_seconds": 1.0,
}


def horse_of(record: TaskRecord) -> psutil.Process:
    """The process that runs the job: its run's runner (``host:pid:nonce``)."""
    assert record.runner is not None
    return psutil.Process(int(record.runner.split(":")[1]))


@contextlib.contextmanager
def reaping(*procs: psutil.Process) -> Iterator[None]:
    """A work horse is in a process group of its own: a kill of its worker's group
    leaves it running, and so would the stack's teardown. Stop it here whatever happens."""
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


def start_notification(stack: LocalStack, email: str) -> tuple[list[str], TaskRecord]:
    r = httpx.post(f"{stack.url('rq')}/send-notification/{email}", timeout=10)
    assert r.status_code == 202, r.text
    ids: list[str] = r.json()["task_ids"]
    running = wait_for_state(stack, ids[0], {"running"}, timeout=30)
    return ids, running


def verdict(stack: LocalStack, task_id: str) -> dict[str, Any]:
    got: dict[str, Any] = httpx.get(f"{stack.url('rq')}/tasks/{task_id}", timeout=10).json()
    return got


def settled(stack: LocalStack, task_id: str, timeout: float) -> dict[str, Any]:
    """The verdict once it is final (never "in flight" or "awaiting redelivery")."""

    def final() -> dict[str, Any] | None:
        got = verdict(stack, task_id)
        return got if got["verdict"] not in ("in flight", "awaiting redelivery") else None

    result: dict[str, Any] = wait_until(final, timeout, f"a final verdict on {task_id}", 0.2)
    return result


@pytest.mark.parametrize("retry", [False, True])
def test_a_killed_work_horse_is_abandoned_at_once_or_retried(
    make_stack: StackFactory, retry: bool
) -> None:
    stack = make_stack(notification_delay_seconds=3, rq_retry=retry, **QUICK)
    stack.start_all(("redis", "rq-api", "rq-worker"))
    ids, running = start_notification(stack, "horse@example.com")
    horse = horse_of(running)
    assert horse.pid != stack.procs["rq-worker"].pid  # a forked child, not the worker
    with reaping(horse):
        t0 = time.monotonic()
        stack.kill_runner(running.runner or "")
        got = settled(stack, ids[0], 30)
    if not retry:
        # Its worker saw it die: failed into the FailedJobRegistry, nothing reruns it.
        assert got["verdict"] == "abandoned", got
        assert "FailedJobRegistry" in got["verdict_reason"], got
        assert time.monotonic() - t0 < 10  # at once, not at a heartbeat's expiry
        assert log_lines(stack, ids[0]) == []
        # The reason's command brings it back: run as it reads, it runs to the end.
        command = got["verdict_reason"].split("to run it again: ", 1)[1]
        argv = shlex.split(command)
        assert argv[:2] == ["rq", "requeue"]
        url = stack.settings.rq_url  # the reason hides a password; this one has none
        argv[argv.index("--url") + 1] = url
        subprocess.run([sys.executable, "-m", "rq.cli", *argv[1:]], check=True, timeout=60)
        done = wait_for_state(stack, ids[0], {"succeeded"}, timeout=30)
        assert done.attempts == 2
    else:
        assert got["verdict"] == "completed", got
        assert got["attempts"] == 2, got  # the killed run, and RQ's retry
    assert len(log_lines(stack, ids[0])) == 1
    wait_for_state(stack, ids[1], {"succeeded"}, timeout=30)  # the log line behind it


@pytest.mark.parametrize("retry", [False, True])
def test_a_whole_dead_workers_job_is_found_by_the_next_workers_cleanup(
    make_stack: StackFactory, retry: bool
) -> None:
    stack = make_stack(notification_delay_seconds=3, rq_retry=retry, **QUICK)
    stack.start_all(("redis", "rq-api", "rq-worker"))
    ids, running = start_notification(stack, "machine@example.com")
    horse = horse_of(running)
    with reaping(horse):
        # A machine's death: the worker's process group, and the horse outside it.
        stack.kill("rq-worker")
        horse.kill()
        horse.wait(10)
        killed = ledger_record(stack, ids[0])
        assert killed is not None and killed.state == "running"
        t0 = time.monotonic()
        stack.start("rq-worker")
        # 1 + 3 s past the last heartbeat, then the next maintenance pass (each second);
        # a retry then waits for the dead worker's scheduler lock to expire (61 s past
        # its last renewal: RQ's, fixed), for no other scheduler enqueues it before.
        got = settled(stack, ids[0], 120 if retry else 40)
    if not retry:
        assert got["verdict"] == "abandoned", got
        assert (
            "FailedJobRegistry" in got["verdict_reason"] and "rq requeue" in got["verdict_reason"]
        ), got
        assert log_lines(stack, ids[0]) == []
        assert time.monotonic() - t0 < 40
    else:
        # RQ 3.0 retries an abandoned job that has retries left (rq #2015's loss is gone).
        assert got["verdict"] == "completed", got
        assert got["attempts"] == 2, got
        assert len(log_lines(stack, ids[0])) == 1
        assert time.monotonic() - t0 > 30  # the scheduler lock's wait, not the retry's 1 s


def test_the_demo_settles_a_killed_workers_notification_within_a_minute(tmp_path: Path) -> None:
    with procfile_stack(Implementation.rq, tmp_path) as stack:
        assert set(stack.procs) == {"rq-api", "rq-worker", "rq-dashboard"}
        _the_demo_settles_a_killed_workers_notification(stack)


def _the_demo_settles_a_killed_workers_notification(stack: ProcfileStack) -> None:
    ledger, ids, record = a_notification_running(stack, Implementation.rq)
    worker, url = stack.procs["rq-worker"], stack.url
    horse = horse_of(record)
    with reaping(horse):
        worker.kill()  # SIGKILL to its whole process group, mid-notification
        killed = ledger.get(ids[0])
        assert killed is not None and killed.state == "running"
        worker.start()

        def final() -> dict[str, Any] | None:
            got: dict[str, Any] = httpx.get(f"{url}/tasks/{ids[0]}", timeout=10).json()
            return got if got["verdict"] in ("completed", "abandoned", "lost") else None

        got = wait_until(final, 60, "the killed worker's notification to settle", 0.5)
    # The work horse is in a process group of its own: the group's SIGKILL missed it,
    # and it ran its job to the end, once.
    assert got["verdict"] == "completed", got
    assert got["attempts"] == 1, got
    lines = stack.log_file.read_text(encoding="utf-8").splitlines()
    assert len([line for line in lines if f"[{ids[0]}]" in line]) == 1, lines

    # The dashboard answers only with its user and password (.env.example's user, the
    # Procfile's development password).
    board = f"http://127.0.0.1:{stack.ports['rq-dashboard']}/"
    wait_until(lambda: _answers(board), 60, "rq-dashboard to answer", 0.5)
    assert httpx.get(board, timeout=10).status_code == 401
    assert httpx.get(board, auth=("admin", "change-me"), timeout=10).status_code == 200


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return False
    return True


def test_a_dead_broker_is_a_503_that_names_it_and_queues_nothing(
    make_stack: StackFactory,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack = make_stack(rq_broker_url=dead)
    stack.start_all(("redis", "rq-api"))  # it starts without its broker
    url = stack.url("rq")
    got = httpx.get(f"{url}/ready", timeout=15)
    assert got.status_code == 503 and got.json()["dependency"] == "broker", got.text
    t0 = time.time()
    started = time.monotonic()
    got = httpx.post(f"{url}/items/", json={"name": "x", "price": 1}, timeout=15)
    assert time.monotonic() - started < 5  # quickly: the socket timeouts are short
    assert got.status_code == 503, got.text
    assert got.json() == {
        "detail": "broker unavailable, nothing was queued",
        "dependency": "broker",
    }
    assert "Retry-After" in got.headers
    assert stack.ledger().records(since=t0) == []


def test_a_transient_failure_is_retried_through_the_scheduler(make_stack: StackFactory) -> None:
    stack = make_stack(notification_fail_first_attempts=2, **QUICK)
    stack.start_all(("redis", "rq-api", "rq-worker"))
    r = httpx.post(f"{stack.url('rq')}/send-notification/r@example.com", timeout=10)
    notification_id = r.json()["task_ids"][0]
    done = wait_for_state(stack, notification_id, {"succeeded", "failed"}, timeout=60)
    assert (done.state, done.attempts, done.retries) == ("succeeded", 3, 2)
    assert len(log_lines(stack, notification_id)) == 1


def test_the_declared_purge_drops_what_waits(make_stack: StackFactory) -> None:
    # No worker while the purge runs: everything waits, whatever a loaded machine does
    # to the purge's own start (a process of its own, seconds there).
    stack = make_stack()
    stack.start_all(("redis", "rq-api"))
    url = stack.url("rq")
    ids = []
    for i in range(3):
        r = httpx.post(f"{url}/send-notification/p{i}@example.com", timeout=10)
        assert r.status_code == 202, r.text
        ids += r.json()["task_ids"]
    stack.purge_queue(Implementation.rq)  # as the experiments run it
    stack.start("rq-worker")
    r = httpx.post(f"{url}/items/", json={"name": "after", "price": 1}, timeout=10)
    [later] = r.json()["task_ids"]
    # The worker reads on: what comes after runs; what waited was dropped, never run.
    assert wait_for_state(stack, later, {"succeeded"}, timeout=60).state == "succeeded"
    for task_id in ids:
        record = ledger_record(stack, task_id)
        assert record is not None and record.state == "queued", record
        assert not log_lines(stack, task_id)
