"""The conformance suite: what every declared implementation promises, against real
processes (a redis-server, uvicorns, each one's workers and scheduler). The same
request goes to every app; what only some can do is selected by the capabilities
their declaration names (``shared.services``), never by name."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.local import LocalStack
from harness.procs import wait_until
from shared.services import IMPLEMENTATIONS as DECLARED
from tests.integration.conftest import StackFactory, ledger_record, log_lines, wait_for_state

pytestmark = pytest.mark.xdist_group("delivery")  # one module stack, one worker

# Every declared implementation, and those with each capability.
IMPLEMENTATIONS = [impl.value for impl in DECLARED]
IN_ORDER = [impl.value for impl, d in DECLARED.items() if d.in_order]
CONCURRENT = [impl.value for impl, d in DECLARED.items() if not d.in_order]
PERIODIC = [impl.value for impl, d in DECLARED.items() if d.periodic]
DELAY = 2.0  # the seed's slow notification; the response must come well before it ends
# The periodic task's line (every implementation's schedule writes the same one).
PERIODIC_LINE = "periodic log line"


@pytest.fixture(scope="module")
def stack(make_module_stack: StackFactory) -> Iterator[LocalStack]:
    stack = make_module_stack(notification_delay_seconds=DELAY, beat_interval_seconds=1)
    services = [s for d in DECLARED.values() for s in (*d.needs, d.periodic) if s]
    stack.start_all(tuple(dict.fromkeys(["redis", *(s for s in services if s != "broker")])))
    yield stack


@pytest.mark.serial
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_response_arrives_before_the_slow_notification_finishes(
    stack: LocalStack, impl: str
) -> None:
    started = time.monotonic()
    r = httpx.post(f"{stack.url(impl)}/send-notification/user@example.com", timeout=10)
    answered = time.monotonic() - started

    assert r.status_code == 202, r.text
    notification_id, log_id = r.json()["task_ids"]
    # The answer did not wait for the 2-second notification...
    assert answered < DELAY / 2, f"{impl} answered after {answered:.2f}s"
    record = ledger_record(stack, notification_id)
    assert record is not None and record.state in {"queued", "running"}
    # ...which still completes afterwards, and so does the second task.
    done = wait_for_state(stack, notification_id, {"succeeded"}, timeout=DELAY + 15)
    assert done.finished_at is not None and done.queued_at is not None
    assert done.finished_at - done.queued_at >= DELAY
    wait_for_state(stack, log_id, {"succeeded"})
    assert len(log_lines(stack, notification_id)) == 1
    assert "notification sent to user@example.com" in log_lines(stack, notification_id)[0]
    assert "notification scheduled for user@example.com" in log_lines(stack, log_id)[0]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_task_ids_come_in_the_order_scheduled(stack: LocalStack, impl: str) -> None:
    r = httpx.post(f"{stack.url(impl)}/send-notification/order@example.com", timeout=10)
    ids = r.json()["task_ids"]
    records = [ledger_record(stack, task_id) for task_id in ids]
    assert [rec.kind for rec in records if rec] == ["notification", "log"]
    assert all(rec and rec.implementation == impl for rec in records)
    for task_id in ids:
        wait_for_state(stack, task_id, {"succeeded"}, timeout=DELAY + 15)


@pytest.mark.parametrize("impl", IN_ORDER)
def test_a_requests_tasks_run_one_after_the_other(stack: LocalStack, impl: str) -> None:
    """BackgroundTasks: Starlette awaits a response's tasks in order, so the log line
    waits for the notification."""
    r = httpx.post(f"{stack.url(impl)}/send-notification/seq@example.com", timeout=10)
    notification_id, log_id = r.json()["task_ids"]
    log = wait_for_state(stack, log_id, {"succeeded"}, timeout=DELAY + 15)
    notification = wait_for_state(stack, notification_id, {"succeeded"})
    assert log.started_at is not None and notification.finished_at is not None
    assert log.started_at >= notification.finished_at


@pytest.mark.parametrize("impl", CONCURRENT)
def test_the_log_task_runs_while_the_notification_still_runs(stack: LocalStack, impl: str) -> None:
    """A worker's free slot (a Celery pool process, a taskiq thread) takes either task:
    the log line does not wait."""
    r = httpx.post(f"{stack.url(impl)}/send-notification/par@example.com", timeout=10)
    notification_id, log_id = r.json()["task_ids"]
    notification = wait_for_state(stack, notification_id, {"succeeded"}, timeout=DELAY + 15)
    log = wait_for_state(stack, log_id, {"succeeded"})
    assert log.finished_at is not None and notification.finished_at is not None
    assert log.finished_at < notification.finished_at


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_create_item_writes_a_log_line(stack: LocalStack, impl: str) -> None:
    r = httpx.post(
        f"{stack.url(impl)}/items/", json={"name": "노트북", "price": 1500000}, timeout=10
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["item"] == {"name": "노트북", "price": 1500000}
    [task_id] = body["task_ids"]
    record = wait_for_state(stack, task_id, {"succeeded"})
    assert (record.implementation, record.kind, record.attempts) == (impl, "log", 1)
    [line] = log_lines(stack, task_id)
    assert "item created: 노트북 (1,500,000.00)" in line


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_unknown_task_is_404(stack: LocalStack, impl: str) -> None:
    r = httpx.get(f"{stack.url(impl)}/tasks/never-seen", timeout=5)
    assert r.status_code == 404
    assert "never-seen" in r.json()["detail"]


def raw(body: bytes) -> dict[str, Any]:
    """A body sent as it is, declared as JSON."""
    return {"content": body, "headers": {"content-type": "application/json"}}


# case -> (method, path, request arguments, the status it must get)
BAD_REQUESTS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "invalid email": ("POST", "/send-notification/not-an-email", {}, 422),
    "negative price": ("POST", "/items/", {"json": {"name": "노트북", "price": -1}}, 422),
    "missing field": ("POST", "/items/", {"json": {"name": "노트북"}}, 422),
    "empty name": ("POST", "/items/", {"json": {"name": "", "price": 1}}, 422),
    "untrimmed name": ("POST", "/items/", {"json": {"name": " 노트북", "price": 1}}, 422),
    "a line break in the name": (
        "POST", "/items/", {"json": {"name": "a\n[forged] line", "price": 1}}, 422,
    ),
    "unknown field": ("POST", "/items/", {"json": {"name": "a", "price": 1, "x": 2}}, 422),
    "price true": ("POST", "/items/", {"json": {"name": "a", "price": True}}, 422),
    "price as a string": ("POST", "/items/", {"json": {"name": "a", "price": "12"}}, 422),
    # Python's JSON parser reads these three; none is a finite number.
    "price NaN": ("POST", "/items/", raw(b'{"name":"a","price":NaN}'), 422),
    "price Infinity": ("POST", "/items/", raw(b'{"name":"a","price":Infinity}'), 422),
    "price 1e400": ("POST", "/items/", raw(b'{"name":"a","price":1e400}'), 422),
    "non-JSON body": ("POST", "/items/", raw(b"name=x&price=1"), 422),
    "body over the limit": ("POST", "/items/", raw(b"{\"name\":\"%s\"}" % (b"x" * 20_000)), 413),
}  # fmt: skip


@pytest.mark.xdist_group("delivery-input")  # a module stack of its own, beside the other
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_bad_input_is_refused_with_a_4xx_and_schedules_nothing(
    stack: LocalStack, impl: str, case: str
) -> None:
    # Only tasks queued from now on: beat adds one a second, and the list is the
    # oldest first, at most 500, so an unbounded one could stop showing new tasks.
    t0 = time.time()

    def scheduled() -> int:
        params: dict[str, str | float] = {"implementation": impl, "since": t0}
        records = httpx.get(f"{stack.url(impl)}/tasks", params=params, timeout=5).json()
        return sum(1 for rec in records if rec["kind"] in ("notification", "log"))

    before_tasks, before_lines = scheduled(), len(log_lines(stack))
    method, path, kwargs, expected = BAD_REQUESTS[case]
    r = httpx.request(method, f"{stack.url(impl)}{path}", timeout=5, **kwargs)
    assert r.status_code == expected, r.text
    assert r.json()["detail"]  # says what is wrong
    # A wait for something that must not happen. The ledger records what a request
    # schedules before it answers, so the count below is final at once; a log line
    # would follow within milliseconds.
    time.sleep(0.3)
    assert scheduled() == before_tasks
    # The schedules write their own lines; none of the requests' kinds may appear.
    new = log_lines(stack)[before_lines:]
    assert not [line for line in new if PERIODIC_LINE not in line]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_huge_body_is_refused_before_it_is_read(stack: LocalStack, impl: str) -> None:
    """100 MB announced, one byte sent: the 413 comes at once, without the rest."""
    host, port = stack.url(impl).removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(
            b"POST /items/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n{"
        )
        answer = b""
        while chunk := conn.recv(4096):  # the server closes the connection after it
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"MAX_BODY_BYTES" in answer


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_an_address_the_schema_calls_valid_is_accepted(stack: LocalStack, impl: str) -> None:
    # A reserved test domain: a syntax check only (no reserved-domain list) accepts it.
    r = httpx.post(f"{stack.url(impl)}/send-notification/h@ctl9jjde.immclsqf.test", timeout=10)
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("impl", PERIODIC)
def test_the_schedule_fires_the_periodic_task_more_than_once(stack: LocalStack, impl: str) -> None:
    def beats() -> list[dict[str, object]]:
        records = httpx.get(f"{stack.url(impl)}/tasks", params={"implementation": impl})
        return [r for r in records.json() if r["kind"] == "beat" and r["state"] == "succeeded"]

    wait_until(lambda: len(beats()) >= 2, 30, "two periodic runs in the ledger", 0.2)
    runs = beats()
    assert len({r["task_id"] for r in runs}) == len(runs)  # distinct runs, not one retried
    assert all(r["attempts"] == 1 for r in runs)
