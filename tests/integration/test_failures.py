"""Transient failures, exceptions and a dead Redis: where the two sides differ."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from harness.ports import free_port
from harness.procs import wait_until
from tests.integration.conftest import StackFactory, ledger_record, log_lines, wait_for_state

FLAKY = {
    "notification_delay_seconds": 0.2,
    "notification_fail_first_attempts": 2,
    "retry_backoff_seconds": 0.1,
}


def test_celery_retries_and_succeeds_on_the_third_attempt_bg_records_failed(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(**FLAKY)
    stack.start_all(("redis", "bg-api", "celery-api", "worker"))

    celery_ids = httpx.post(f"{stack.url('celery')}/send-notification/a@example.com").json()
    bg_ids = httpx.post(f"{stack.url('bg')}/send-notification/a@example.com").json()

    notification = wait_for_state(stack, celery_ids["task_ids"][0], {"succeeded", "failed"})
    assert notification.state == "succeeded"
    assert (notification.attempts, notification.retries) == (3, 2)
    assert len(log_lines(stack, notification.task_id)) == 1  # sent once, not three times
    wait_for_state(stack, celery_ids["task_ids"][1], {"succeeded"})

    # No retry on the BackgroundTasks side: the first failure is final...
    bg_notification_id, bg_log_id = bg_ids["task_ids"]
    failed = wait_for_state(stack, bg_notification_id, {"succeeded", "failed"})
    assert (failed.state, failed.attempts, failed.retries) == ("failed", 1, 0)
    assert failed.error and "TransientNotificationError" in failed.error
    # ...it did not vanish: the server log names the task, with time, level and logger
    # (the API configures logging like the worker: LOG_LEVEL, one format)...
    line = re.compile(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR fastapi_bg\.tasks: "
        rf"background task {bg_notification_id} \(notification\) failed$",
        re.M,
    )
    wait_until(
        lambda: line.search(stack.procs["bg-api"].output()), 5, "the failure in the server log"
    )
    assert re.search(r" INFO shared\.app: bg API starting: ledger on", stack.output("bg-api"))
    # ...and, Starlette's semantics, the task scheduled after it never ran. (A wait
    # for something that must not happen: had Starlette gone on, the log task would
    # have started within milliseconds of the failure logged above.)
    time.sleep(0.5)
    skipped = ledger_record(stack, bg_log_id)
    assert skipped is not None and (skipped.state, skipped.attempts) == ("queued", 0)
    assert log_lines(stack, bg_log_id) == []
    assert log_lines(stack, bg_notification_id) == []


def test_celery_gives_up_after_the_bounded_retries(make_stack: StackFactory) -> None:
    stack = make_stack(
        **{**FLAKY, "notification_fail_first_attempts": 10, "notification_max_retries": 2}
    )
    stack.start_all(("redis", "celery-api", "worker"))
    ids = httpx.post(f"{stack.url('celery')}/send-notification/b@example.com").json()["task_ids"]
    record = wait_for_state(stack, ids[0], {"succeeded", "failed"})
    assert (record.state, record.attempts, record.retries) == ("failed", 3, 2)
    assert record.error and "retries exhausted" in record.error
    assert log_lines(stack, ids[0]) == []


def test_with_the_ledger_off_celery_counts_attempts_by_its_own_retries(
    make_stack: StackFactory,
) -> None:
    # LEDGER_ENABLED=false (the ledger-cost experiment's baseline) records nothing, so
    # the worker cannot read the attempt number from it: Celery's retry count says it.
    stack = make_stack(**FLAKY, ledger_enabled=False)
    stack.start_all(("redis", "celery-api", "worker"))
    r = httpx.post(f"{stack.url('celery')}/send-notification/c@example.com", timeout=10)
    assert r.status_code == 202, r.text
    notification_id, log_id = r.json()["task_ids"]
    # Two attempts fail, the third sends: once.
    wait_until(lambda: log_lines(stack, notification_id), 20, "the notification, third attempt")
    wait_until(lambda: log_lines(stack, log_id), 10, "its log line")
    assert len(log_lines(stack, notification_id)) == 1
    assert ledger_record(stack, notification_id) is None  # nothing recorded, as asked
    retries = re.findall(
        rf"Task notifications\.send\[{notification_id}\] retry", stack.output("worker")
    )
    assert len(retries) == 2


@pytest.mark.serial
def test_redis_down_celery_answers_503_fast_while_bg_keeps_serving(
    make_stack: StackFactory,
) -> None:
    stack = make_stack()
    stack.start_all(("redis", "bg-api", "celery-api"))
    stack.kill("redis")

    for path, kwargs in [
        ("/items/", {"json": {"name": "노트북", "price": 1500000}}),
        ("/send-notification/user@example.com", {}),
    ]:
        started = time.monotonic()
        r = httpx.post(f"{stack.url('celery')}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        # It names the dependency and when to try again; the host stays in the log.
        assert r.json() == {"detail": "the ledger cannot be reached", "dependency": "ledger"}
        assert int(r.headers["Retry-After"]) > 0
        assert elapsed < 2.5, f"503 took {elapsed:.2f}s"

    # The BackgroundTasks side needs no broker: it still serves and does the work.
    r = httpx.post(
        f"{stack.url('bg')}/items/", json={"name": "노트북", "price": 1500000}, timeout=10
    )
    assert r.status_code == 202, r.text
    [task_id] = r.json()["task_ids"]
    wait_until(lambda: log_lines(stack, task_id), 10, "the BG log line without Redis")
    assert httpx.get(f"{stack.url('bg')}/health").status_code == 200
    # Its ledger says clearly that it is unavailable (not a misleading 404).
    r = httpx.get(f"{stack.url('bg')}/tasks/{task_id}")
    assert r.status_code == 503 and r.json()["dependency"] == "ledger", r.text
    assert "127.0.0.1" not in r.text and "Error" not in r.text
    # Alive, not ready: a load balancer stops sending it work the ledger cannot record.
    for url in (stack.url("bg"), stack.url("celery")):
        assert httpx.get(f"{url}/health").status_code == 200
        r = httpx.get(f"{url}/ready", timeout=10)
        assert r.status_code == 503 and r.json()["dependency"] == "ledger", r.text
        assert "Retry-After" in r.headers
    assert "Connection refused" in stack.output("celery-api")  # the detail: in the log

    # Redis back: the Celery side accepts work again without a restart.
    stack.start("redis")
    r = httpx.post(f"{stack.url('celery')}/items/", json={"name": "x", "price": 1}, timeout=10)
    assert r.status_code == 202, r.text
    r = httpx.get(f"{stack.url('celery')}/ready", timeout=10)
    assert r.status_code == 200 and r.json()["checked"] == ["ledger", "broker"], r.text


@pytest.mark.parametrize(
    ("redis_url", "says"),
    [("", "the ledger is off: REDIS_URL is not set"), ("unreachable", "cannot be reached")],
)
def test_bg_app_starts_and_serves_without_redis(
    make_stack: StackFactory, redis_url: str, says: str
) -> None:
    if redis_url == "unreachable":
        redis_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack = make_stack(redis_url=redis_url)
    stack.start("bg-api")
    r = httpx.post(f"{stack.url('bg')}/send-notification/user@example.com")
    assert r.status_code == 202
    notification_id, log_id = r.json()["task_ids"]
    wait_until(lambda: log_lines(stack, log_id), 10, "both lines without any Redis")
    assert log_lines(stack, notification_id)
    r = httpx.get(f"{stack.url('bg')}/tasks/{log_id}")
    assert r.status_code == 503 and says in r.json()["detail"]
