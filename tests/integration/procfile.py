"""An implementation's ``Procfile`` lines, run as ``make dev`` runs them: with
``.env.example``'s values (``harness.dev.service_env``), on a redis-server of their
own, and only the URLs, the log file, the ports and the notification's delay
overridden. What the demo settings promise is checked against this, not against
the test harness's own settings."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from harness.dev import service_env
from harness.ports import free_port
from harness.procs import REPO_ROOT, Proc, stop_all, wait_http, wait_until
from harness.servers import RedisServer
from shared.ledger import Ledger, connect
from shared.models import TaskRecord
from shared.services import IMPLEMENTATIONS, SERVICES, Implementation, api_of, services_of


def procfile_lines(prefix: str) -> dict[str, str]:
    """The Procfile's processes whose names start with ``prefix``: name -> command."""
    from honcho.environ import parse_procfile

    text = (REPO_ROOT / "Procfile").read_text(encoding="utf-8")
    processes = parse_procfile(text).processes
    return {name: cmd for name, cmd in processes.items() if name.startswith(prefix)}


@dataclass(frozen=True)
class ProcfileStack:
    procs: dict[str, Proc]  # per Procfile line
    url: str  # the implementation's API
    log_file: Path
    redis_url: str
    ports: dict[str, int]  # per service that listens


@contextlib.contextmanager
def procfile_stack(impl: Implementation, tmp_path: Path) -> Iterator[ProcfileStack]:
    """``impl``'s Procfile lines up (its API answering), stopped by process group
    when the block ends."""
    redis_server = RedisServer(free_port(), tmp_path, password=secrets.token_hex(8))
    redis_proc = Proc("redis", redis_server.argv(), {}, tmp_path / "redis.out").start()
    procs: dict[str, Proc] = {}
    try:
        redis_server.wait_ready(redis_proc)
        ports = {name: free_port() for name in services_of(impl) if SERVICES[name].port_variable}
        log_file = tmp_path / "log.txt"
        env = {
            **service_env(tmp_path),
            "REDIS_URL": redis_server.url,
            f"{impl.value.upper()}_BROKER_URL": "",  # empty: REDIS_URL
            "LOG_FILE": str(log_file),
            **{str(SERVICES[name].port_variable): str(port) for name, port in ports.items()},
            "NOTIFICATION_DELAY_SECONDS": "3",
        }
        procs.update(
            (name, Proc(name, ["/bin/sh", "-c", cmd], env, tmp_path / f"{name}.out"))
            for name, cmd in procfile_lines(f"{impl.value}-").items()
        )
        for proc in procs.values():
            proc.start()
        api = api_of(impl)
        url = f"http://127.0.0.1:{ports[api]}"
        wait_http(f"{url}/health", 60, procs[api])
        yield ProcfileStack(procs, url, log_file, redis_server.url, ports)
    finally:
        stop_all([*procs.values(), redis_proc])


def a_notification_running(
    stack: ProcfileStack, impl: Implementation
) -> tuple[Ledger, list[str], TaskRecord]:
    """Once the worker is ready, one notification request; wait until its notification
    runs. The ledger, the request's task ids, and the notification's record then (the
    caller kills what it is about)."""
    worker_service = IMPLEMENTATIONS[impl].runs_the_work
    worker = stack.procs[worker_service]
    worker.wait_for_output(SERVICES[worker_service].ready, 60)
    ledger = Ledger(connect(stack.redis_url), impl)
    r = httpx.post(f"{stack.url}/send-notification/kill@example.com", timeout=10)
    assert r.status_code == 202, r.text
    ids: list[str] = r.json()["task_ids"]

    def running() -> TaskRecord | None:
        record = ledger.get(ids[0])
        return record if record is not None and record.state == "running" else None

    record = wait_until(running, 30, "the notification to run")
    return ledger, ids, record


def every_task_completes_once_after_a_restart(
    stack: ProcfileStack, impl: Implementation, within: float = 60
) -> None:
    """The demo's promise where the broker redelivers: the worker SIGKILLed
    mid-notification and started again, every task of the request completes within
    ``within`` seconds, each with exactly one line in ``LOG_FILE``, the notification
    after two runs (the killed one, and one)."""
    ledger, ids, _ = a_notification_running(stack, impl)
    worker = stack.procs[IMPLEMENTATIONS[impl].runs_the_work]
    worker.kill()  # SIGKILL to its whole process group, mid-notification
    killed = ledger.get(ids[0])
    assert killed is not None and killed.state == "running"
    worker.start()

    def done() -> bool:
        records = [ledger.get(i) for i in ids]
        return all(r is not None and r.state == "succeeded" for r in records)

    wait_until(done, within, "every task of the request to complete after the kill")
    lines = stack.log_file.read_text(encoding="utf-8").splitlines()
    for task_id in ids:
        assert len([line for line in lines if f"[{task_id}]" in line]) == 1, lines
    notification = ledger.get(ids[0])
    assert notification is not None and notification.attempts == 2
