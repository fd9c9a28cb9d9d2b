"""Fixtures that start real processes: redis-server on a free port in a temp dir,
uvicorn, a Celery worker and beat. Every one is stopped in teardown, by PID or
process group, also when the test fails.

``make test`` runs these side by side (pytest-xdist, ``--dist loadgroup``): each
test or group gets its own stacks, ports and temp dirs. One rabbitmq-server is
shared by the whole run (``rabbitmq``): it boots in seconds, so the first worker
that needs it starts it, and each stack on it gets a virtual host of its own;
the controller, which outlives every worker, stops it by process group at the
end. A test that kills its broker, or raises its memory alarm, starts its own.
"""

from __future__ import annotations

import fcntl
import json
import logging
import resource
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments.__main__ import main
from experiments.crash.outcome import Outcome
from experiments.crash.runner import run_scenario
from experiments.crash.scenarios import BY_KEY, Params
from harness.local import LocalStack
from harness.procs import Proc, kill_groups, wait_until
from harness.servers import RabbitServer
from harness.stacks import Where
from shared.models import TaskRecord

logger = logging.getLogger(__name__)

StackFactory = Callable[..., LocalStack]


SHARED = "shared_servers"  # the directory of the servers every worker shares


def pytest_configure(config: pytest.Config) -> None:
    # One line per poll would drown a failing test's report.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # the controller, or a run without xdist
        config.stash[_shared_key] = Path(tempfile.mkdtemp(prefix="bgcelery-shared-"))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: every worker learns where the shared servers are (the controller's dir)."""
    node.workerinput[SHARED] = str(node.config.stash[_shared_key])


def pytest_unconfigure(config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is not None:
        return  # a worker: the controller stops what they shared
    directory = config.stash.get(_shared_key, None)
    if directory is None:
        return
    meta = directory / "rabbitmq.json"
    if meta.exists():
        pids = json.loads(meta.read_text())["pids"]
        kill_groups({int(pid): created for pid, created in pids.items()})
    shutil.rmtree(directory, ignore_errors=True)


_shared_key = pytest.StashKey[Path]()
_cpu_key = pytest.StashKey[float]()


def _created(pid: int) -> float | None:
    """A process's start time, which tells it from a later one with its PID."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def shared_dir(config: pytest.Config) -> Path:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return Path(workerinput[SHARED])
    return config.stash[_shared_key]


def _cpu_seconds() -> float:
    """CPU this process and its reaped children (every process a test started and
    stopped, their own children included) have used so far."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # The process tree's CPU over setup, call and teardown (``tests.slowest`` ranks by
    # it): a module's stack counts for the test that started it. Recorded before the
    # teardown's report is written, so the JUnit XML carries it.
    started = _cpu_seconds()
    item.stash[_cpu_key] = started
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if call.when == "teardown" and _cpu_key in item.stash:
        report.user_properties.append(("cpu_s", round(_cpu_seconds() - item.stash[_cpu_key], 2)))
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


@pytest.fixture(scope="session")
def rabbitmq(request: pytest.FixtureRequest) -> RabbitServer:
    """The run's one rabbitmq-server (Debian's): its own epmd and free ports, in a
    temp dir; a virtual host per stack on it (``Where.rabbitmq``)."""
    if not RabbitServer.BIN.joinpath("rabbitmq-server").exists():
        pytest.fail("these tests start their own RabbitMQ: apt-get install -y rabbitmq-server")
    directory = shared_dir(request.config)
    with (directory / "rabbitmq.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker boots it, the others wait
        meta = directory / "rabbitmq.json"
        if meta.exists():
            data = json.loads(meta.read_text())
            if not data["ok"]:
                pytest.fail(f"the shared rabbitmq-server did not boot: see {data['directory']}")
            return RabbitServer(Path(data["directory"]), *data["ports"])
        server = RabbitServer.on_free_ports(directory / "rabbitmq")
        env = server.process_env()
        epmd = Proc("epmd", server.epmd_argv(), env, server.directory / "epmd.out")
        proc = Proc("rabbitmq", server.argv(), env, server.directory / "rabbitmq.out")
        ok = False
        try:
            server.boot(epmd, proc, 90)
            ok = True
        finally:
            # Written whatever happened: the controller stops what was started.
            meta.write_text(
                json.dumps(
                    {
                        "ok": ok,
                        "directory": str(server.directory),
                        "ports": [server.port, server.dist_port, server.epmd_port],
                        "pids": {p.pid: _created(p.pid) for p in (epmd, proc) if p.pid},
                    }
                )
            )
        return server


# --- small helpers the tests share ---------------------------------------------------


def ledger_record(stack: LocalStack, task_id: str) -> TaskRecord | None:
    # Straight from the stack's Redis: whichever API is up (or none) does not matter.
    return stack.ledger().records_of([task_id]).get(task_id)


def wait_for_state(
    stack: LocalStack, task_id: str, states: set[str], timeout: float = 20
) -> TaskRecord:
    """Poll the ledger until the task reaches one of ``states``."""

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


def run_ok(key: str, params: Params, where: Where, broker: str = "redis") -> Outcome:
    """The crash experiment's scenario ``key``, as its CLI runs it; it must have run
    to the end (a scenario failure is an outcome, not an exception)."""
    outcome = run_scenario(BY_KEY[key], params, where, say=logger.info, broker=broker)
    assert outcome.status == "ok", outcome.reason
    return outcome


def experiment_report(name: str, out: Path, *args: str) -> dict[str, Any]:
    """``python -m experiments <name> --reports-dir out ...``: it exits 0; its JSON report."""
    status = main([name, "--reports-dir", str(out), *args])
    assert status == 0, f"{name} exited {status}"
    data: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    return data
