"""Seed 004 against a real uvicorn: sync tasks run in AnyIO's thread pool, async
ones on the event loop, and a blocking call inside an async task stalls the server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from harness.local import LocalStack
from tests.integration.conftest import StackFactory, wait_for_state

pytestmark = pytest.mark.xdist_group("mechanics")  # one module stack, one worker

BLOCK = 2.0


@pytest.fixture(scope="module")
def stack(make_module_stack: StackFactory) -> Iterator[LocalStack]:
    stack = make_module_stack()
    stack.start_all(("redis", "bg-api"))
    yield stack


def schedule(stack: LocalStack, variant: str, seconds: float) -> str:
    r = httpx.post(
        f"{stack.url('bg')}/mechanics/{variant}", params={"seconds": seconds}, timeout=30
    )
    assert r.status_code == 202, r.text
    task_id: str = r.json()["task_ids"][0]
    return task_id


@pytest.mark.parametrize(
    ("variant", "on_loop"),
    [("sync-task", "false"), ("async-task", "true"), ("to-thread-task", "true")],
)
def test_where_each_kind_of_task_runs(stack: LocalStack, variant: str, on_loop: str) -> None:
    record = wait_for_state(stack, schedule(stack, variant, 0.05), {"succeeded"})
    assert record.detail["on_loop_thread"] == on_loop
    if variant == "sync-task":
        # run_in_threadpool -> anyio.to_thread.run_sync: AnyIO's worker threads.
        assert record.detail["thread"].startswith("AnyIO worker thread")


def health_wait_during(stack: LocalStack, variant: str) -> float:
    """Start the task, wait until it runs, then time one /health request."""
    task_id = schedule(stack, variant, BLOCK)
    # Straight from Redis (as wait_for_state reads the ledger): the API itself
    # cannot answer while its loop is blocked.
    wait_for_state(stack, task_id, {"running"}, timeout=10)
    started = time.monotonic()
    assert httpx.get(f"{stack.url('bg')}/health", timeout=30).status_code == 200
    waited = time.monotonic() - started
    wait_for_state(stack, task_id, {"succeeded"}, timeout=BLOCK + 10)
    return waited


@pytest.mark.serial
def test_blocking_call_in_async_task_stalls_every_request_and_to_thread_fixes_it(
    stack: LocalStack,
) -> None:
    blocked = health_wait_during(stack, "blocking-async-task")
    fixed = health_wait_during(stack, "to-thread-task")
    # /health had to wait for (most of) the block: the loop was not running...
    assert blocked >= BLOCK / 2, f"/health waited only {blocked:.2f}s"
    # ...and with asyncio.to_thread it did not wait for it at all.
    assert fixed < blocked / 4, f"to_thread: {fixed:.2f}s vs blocking: {blocked:.2f}s"
