"""Fixtures that start real processes: redis-server on a free port in a temp dir,
uvicorn, a Celery worker and beat. Every one is stopped in teardown, by PID or
process group, also when the test fails."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.local import LocalStack
from harness.procs import Proc, free_port, wait_until
from harness.servers import RabbitServer
from shared.models import TaskRecord

StackFactory = Callable[..., LocalStack]


def pytest_configure(config: pytest.Config) -> None:
    # One line per poll would drown a failing test's report.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    # A failing test shows what its processes printed.
    if report.failed:
        for stack in getattr(item, "_stacks", []):
            report.sections.append(("process output", stack.outputs()))


def _stack_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[StackFactory]:
    stacks: list[LocalStack] = []

    def make(**kwargs: Any) -> LocalStack:
        """``kwargs``: LocalStack's options and any Settings field (a test's settings)."""
        if shutil.which("redis-server") is None:
            pytest.fail(
                "this test starts its own redis-server and none is on PATH: "
                "apt-get install -y redis-server (the unit tests, make test-fast, need none)"
            )
        stack = LocalStack(tmp_path_factory.mktemp("stack"), **kwargs)
        stacks.append(stack)
        node = request.node
        node._stacks = [*getattr(node, "_stacks", []), stack]
        return stack

    try:
        yield make
    finally:
        for stack in stacks:
            stack.close()


@pytest.fixture
def make_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[StackFactory]:
    """A factory for stacks that live as long as one test."""
    yield from _stack_factory(tmp_path_factory, request)


@pytest.fixture(scope="module")
def make_module_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[StackFactory]:
    """A factory for stacks shared by the tests of one module (starting a worker costs seconds)."""
    yield from _stack_factory(tmp_path_factory, request)


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    """One rabbitmq-server (Debian's) for the tests of a module: it boots in seconds.

    Its own epmd and free ports, everything in a temp dir; stopped by process group."""
    if not RabbitServer.BIN.joinpath("rabbitmq-server").exists():
        pytest.fail("these tests start their own RabbitMQ: apt-get install -y rabbitmq-server")
    directory = tmp_path_factory.mktemp("rabbitmq")
    server = RabbitServer(directory, port=free_port(), dist_port=free_port(), epmd_port=free_port())
    server.prepare()
    env = {**os.environ, **server.env()}
    epmd = Proc("epmd", server.epmd_argv(), env, directory / "epmd.out").start()
    proc = Proc("rabbitmq", server.argv(), env, directory / "rabbitmq.out")
    try:
        proc.start()
        server.wait_ready(proc, 90)
        yield server
    finally:
        proc.stop(grace=10)
        epmd.stop()


# --- small helpers the tests share ---------------------------------------------------


def ledger_record(stack: LocalStack, task_id: str) -> TaskRecord | None:
    # Either API reads the same ledger; use one that is up.
    base = stack.bg_url if stack.is_up("bg-api") else stack.celery_url
    r = httpx.get(f"{base}/tasks/{task_id}", timeout=5)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return TaskRecord.model_validate(r.json())


def wait_for_state(
    stack: LocalStack, task_id: str, states: set[str], timeout: float = 20
) -> TaskRecord:
    """Poll the ledger (through an API) until the task reaches one of ``states``."""

    def reached() -> TaskRecord | None:
        record = ledger_record(stack, task_id)
        return record if record is not None and record.state in states else None

    result = wait_until(reached, timeout, f"task {task_id} to reach {sorted(states)}", 0.05)
    assert isinstance(result, TaskRecord)
    return result


def log_lines(stack: LocalStack, task_id: str | None = None) -> list[str]:
    path: Path = stack.log_file
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if task_id is None or f"[{task_id}]" in line]
