"""The one interface every caller drives, whatever runs the stack.

Two targets implement it: ``LocalStack`` (local processes on free ports, the
default) and ``ComposeTarget`` (a running ``docker compose`` project). Service
names and implementations are those of ``shared.services``, the one table of what runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from shared.models import Implementation, RunnerRecord, TaskRecord
from shared.services import IMPLEMENTATIONS
from shared.settings import Settings

# Keyed by an implementation's value: a str names one as well as the enum does.
API: dict[str, str] = {impl.value: s.api for impl, s in IMPLEMENTATIONS.items()}
# What runs each implementation's work (the process a failure setting must reach).
RUNS_THE_WORK: dict[str, str] = {impl.value: s.runs_the_work for impl, s in IMPLEMENTATIONS.items()}


class Unsupported(Exception):
    """The target cannot run this spec (the reason is the message)."""


@dataclass(frozen=True)
class ServiceState:
    service: str
    up: bool
    # What identifies the running process: "pid 123" locally, the container otherwise.
    detail: str = ""
    pid: int | None = None
    # When it was last started (wall clock), if known.
    since: float | None = None


@dataclass(frozen=True)
class Memory:
    """Resident memory of a service (all its processes), MiB."""

    rss: float
    pss: float
    processes: int


class LedgerView(Protocol):
    """The ledger as a target lets an observer read it."""

    def records(
        self, *, implementation: Implementation | None = None, since: float | None = None
    ) -> list[TaskRecord]: ...

    def records_of(self, task_ids: list[str]) -> dict[str, TaskRecord]:
        """These tasks' records (the ones the ledger holds), cheaply."""
        ...

    def runners(self) -> list[RunnerRecord]: ...


class Target(Protocol):
    name: str

    @property
    def settings(self) -> Settings:
        """What the stack's Python processes run with (a compose stack's: read back from it)."""
        ...

    def settings_for(self, service: str) -> Settings:
        """What one service runs with (``reconfigure`` may have changed it)."""
        ...

    @property
    def flower_url(self) -> str | None:
        """Flower, where the target runs it."""
        ...

    @property
    def broker_service(self) -> str:
        """The service that is the "broker" service: "redis" or "rabbitmq"."""
        ...

    @property
    def rabbitmq_ui(self) -> str | None:
        """RabbitMQ's management UI, where the target runs RabbitMQ."""
        ...

    def service_of(self, runner: str) -> str | None:
        """Which service a runner ("host:pid:nonce", from the ledger) belongs to."""
        ...

    def kill_runner(self, runner: str) -> None:
        """SIGKILL one process (a runner from the ledger), not its whole service."""
        ...

    @property
    def services(self) -> tuple[str, ...]:
        """Every service this target has (running or not)."""
        ...

    @property
    def worker_processes(self) -> int:
        """How many tasks the Celery side runs at once (pool processes, all workers)."""
        ...

    @property
    def appendonly(self) -> bool:
        """Does the stack's Redis keep an append-only file (queued tasks survive a restart)?"""
        ...

    @property
    def fsync_lag(self) -> float:
        """Seconds until a write to the stack's Redis is on disk."""
        ...

    def url(self, impl: str) -> str: ...

    def start(self, service: str, timeout: float = 60) -> None:
        """Start it (if it is not running) and wait until it serves."""
        ...

    def kill(self, service: str) -> None:
        """SIGKILL: it dies at once, with whatever it was running."""
        ...

    def broker_primary(self) -> str:
        """The broker's process that leads now (Sentinel's primary, the node that
        leads Celery's queue; a single broker: itself)."""
        ...

    def cut(self, service: str) -> None:
        """Cut ``service`` off its broker, its connections left open (a partition)."""
        ...

    def heal(self, service: str) -> None:
        """End the partition ``cut`` began."""
        ...

    def terminate(self, service: str, timeout: float = 60) -> int | None:
        """SIGTERM, SIGKILL after ``timeout``: a graceful stop. The exit code, if known."""
        ...

    def is_up(self, service: str) -> bool: ...

    def status(self) -> dict[str, ServiceState]:
        """Every service's state, in one look."""
        ...

    def reconfigure(self, service: str, timeout: float = 90, **overrides: object) -> None:
        """Restart ``service`` (gracefully) with these settings changed; the others keep theirs."""
        ...

    def ledger(self) -> LedgerView: ...

    def purge_queue(self, impl: Implementation) -> None:
        """Drop ``impl``'s messages still waiting in its broker (between measurements),
        with its declared command (``ImplementationSpec.purge``)."""
        ...

    def extra_api(self, impl: str, **overrides: object) -> AbstractContextManager[str]:
        """Another API process of ``impl`` with these settings changed; its URL.

        Local only: a compose stack runs the processes its file declares."""
        ...

    def effect_lines(self) -> dict[str, int]:
        """Lines per task id in LOG_FILE: the work's only effect."""
        ...

    def output(self, service: str) -> str:
        """What ``service`` printed since this target was opened (every run of it)."""
        ...

    def memory(self) -> dict[str, Memory]:
        """Resident memory of each running service."""
        ...

    def close(self) -> None:
        """Stop what this target started (a compose stack belongs to its user: left running)."""
        ...


def read_records(target: Target, ids: Sequence[str], since: float | None) -> list[TaskRecord]:
    """The ledger's records of these tasks (the ones it holds)."""
    wanted = set(ids)
    return [r for r in target.ledger().records(since=since) if r.task_id in wanted]


def purge_command(impl: Implementation) -> tuple[str, tuple[str, ...]]:
    """Where and how ``impl`` drops its waiting messages; Unsupported if it declares none."""
    spec = IMPLEMENTATIONS[Implementation(impl)]
    if not spec.purge:
        raise Unsupported(f"{impl} declares no way to purge its queue")
    return spec.runs_the_work, spec.purge
