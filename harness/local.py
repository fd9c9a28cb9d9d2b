"""The whole comparison as local processes on free ports, in one work directory.

``LocalStack`` is the default target: redis-server, every implementation's API
and workers (as the declaration lists them, ``shared.services``), a broker
(``harness.local_broker``), under the same service names as
``docker-compose.yml``. Every Python process gets its settings from one
``shared.settings.Settings`` (``Settings.to_env``), never from the environment
this process happens to have. Services start on demand; ``close`` stops every
one of them, by process group, in reverse order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harness.local_broker import GROUPS, LocalBroker
from harness.ports import free_port
from harness.procs import REPO_ROOT, Proc, stop_all, tree_memory, tree_pids, wait_http
from harness.proxy import Partition
from harness.servers import RabbitServer, RedisServer
from harness.target import API, Memory, ServiceState, purge_command
from shared.ledger import Ledger, connect
from shared.models import Implementation, RunnerRecord, TaskRecord
from shared.services import (
    CORE_SERVICES,
    DEFAULT_STACK,
    IMPLEMENTATIONS,
    IN_PROCESS_APIS,
    Probe,
)
from shared.services import SERVICES as SERVICE_TABLE
from shared.services import service as table_entry
from shared.settings import Settings, explicit_settings
from shared.work import count_effect_lines

logger = logging.getLogger(__name__)

# Every stack's services, and the ones it starts only when asked (the table's).
SERVICES = tuple(s for s in CORE_SERVICES)
OPTIONAL = tuple(name for name, s in SERVICE_TABLE.items() if s.optional and s.python)

# Short demo values, so that every effect shows within seconds in a test.
TEST_SETTINGS: dict[str, Any] = {
    "notification_delay_seconds": 0.2,
    "celery_visibility_timeout": 3.0,
    "celery_restore_interval": 0.5,
    "beat_interval_seconds": 3600.0,
    "retry_backoff_seconds": 0.2,
}


def python_argv(service: str, **fields: object) -> list[str]:
    """A Python service's command (the table's, and its local options filled in
    with ``fields``), run by this interpreter: ``python -m uvicorn ...``."""
    spec = table_entry(service)
    local = [option.format(name=service, **fields) for option in spec.local]
    # A command that is Python itself ("python -m module"): this interpreter runs it.
    if spec.command[0] == "python":
        return [sys.executable, *spec.command[1:], *local]
    return [sys.executable, "-m", *spec.command, *local]


@dataclass
class LocalLedger:
    """The ledger read straight from the stack's Redis: works with both APIs down."""

    url: str
    _ledger: Ledger | None = field(default=None, init=False, repr=False)

    def _get(self) -> Ledger:
        if self._ledger is None:
            # It only reads: whose ledger it would write to does not matter.
            self._ledger = Ledger(connect(self.url, 2.0), next(iter(Implementation)))
        return self._ledger

    def records(
        self, *, implementation: Implementation | None = None, since: float | None = None
    ) -> list[TaskRecord]:
        return self._get().tasks(implementation, since=since, limit=1_000_000)

    def records_of(self, task_ids: list[str]) -> dict[str, TaskRecord]:
        return self._get().records(task_ids)

    def runners(self) -> list[RunnerRecord]:
        return self._get().runners()

    def close(self) -> None:
        if self._ledger is not None and self._ledger.client is not None:
            self._ledger.client.close()
        self._ledger = None


class LocalStack:
    """Local processes on free ports, one work directory; a ``harness.target.Target``."""

    name = "local"

    def __init__(
        self,
        workdir: Path,
        settings: Settings | None = None,
        *,
        appendonly: bool = False,
        worker_concurrency: int = 2,
        graceful_timeout: int | None = None,
        bg_workers: int = 1,
        api_processes: int = 1,
        workers: int = 1,
        broker: str = "redis",
        rabbitmq: RabbitServer | None = None,
        consumer_timeout_ms: int | None = None,
        partitioned: tuple[str, ...] = (),
        sentinel_replicas: int = 1,
        min_replicas: int = 0,
        **overrides: Any,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A password of its own, as in compose (it costs nothing): every client here
        # reaches it through its URL, which carries it.
        self.redis_server = RedisServer(
            free_port(), self.workdir, appendonly=appendonly, password=secrets.token_hex(8)
        )
        # Every service that listens, on a port of its own (a broker's come with its server).
        self.ports = {name: free_port() for name, s in SERVICE_TABLE.items() if s.port and s.python}
        self.log_file = self.workdir / "log.txt"
        base = settings if settings is not None else explicit_settings(**TEST_SETTINGS)
        # The broker the implementations that need one publish to, besides the Redis.
        self.broker = LocalBroker.open(
            broker,
            self.workdir,
            vhost=f"stack-{self.redis_server.port}",
            shared=rabbitmq,
            consumer_timeout_ms=consumer_timeout_ms,
            sentinel_replicas=sentinel_replicas,
            min_replicas=min_replicas,
        )
        self.rabbitmq = self.broker.rabbitmq  # its own RabbitMQ (None: none, or a shared one)
        self.sentinel, self.cluster = self.broker.sentinel, self.broker.cluster
        self._settings = base.replace(
            **{
                # The experiments drive their own routes; a test may switch them off.
                "experiment_routes": True,
                "redis_url": self.redis_server.url,
                # Every implementation that needs the stack's broker service goes to it
                # (its "<implementation>_broker_url"; empty: Redis).
                **{
                    key: self.broker.url
                    for impl, spec in IMPLEMENTATIONS.items()
                    if "broker" in spec.needs
                    and (key := f"{impl.value}_broker_url") in Settings.model_fields
                },
                "log_file": str(self.log_file),
                **self.broker.settings,
                **overrides,
            }
        )
        self.workers = workers
        # Per service: settings that differ from the stack's (``reconfigure``).
        self.service_settings: dict[str, dict[str, Any]] = {}
        self.worker_concurrency = worker_concurrency
        self.graceful_timeout = graceful_timeout
        self.bg_workers = bg_workers
        # uvicorn processes of every API (bg-api: at least ``bg_workers``).
        self.api_processes = api_processes
        self.procs: dict[str, Proc] = {}
        self._ledger = LocalLedger(self.redis_server.url)
        # The services whose way to the broker goes through a proxy that can freeze.
        self.partitions: dict[str, Partition] = {}
        for service in partitioned:
            self._partition(service)

    def _partition(self, service: str) -> None:
        """``service`` reaches its broker through a ``Partition``; on Redis its ledger
        goes the same way (one server: a cut machine loses both)."""
        s = self._settings
        if self.broker.group is not None:
            raise ValueError("a partition: on a single-node broker only (redis or rabbitmq)")
        if s.broker == "redis":
            port, key = self.redis_server.port, "redis_url"
        else:
            server = self.broker.server
            assert server is not None
            port, key = server.port, "celery_broker_url"
        part = Partition(self.workdir, "127.0.0.1", port)
        url = urlsplit(getattr(s, key))
        moved = url._replace(netloc=url.netloc.replace(f"127.0.0.1:{port}", part.address))
        self.partitions[service] = part
        self.service_settings[service] = {
            **self.service_settings.get(service, {}),
            key: urlunsplit(moved),
        }

    # --- what it runs ---------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def extra_workers(self) -> tuple[str, ...]:
        """The Celery workers beside "worker": worker-2, worker-3, ..."""
        return tuple(f"worker-{i}" for i in range(2, self.workers + 1))

    @property
    def services(self) -> tuple[str, ...]:
        optional = tuple(s for s in OPTIONAL if s in self.procs)
        return SERVICES + self.extra_workers + self.broker.services + optional

    @property
    def broker_service(self) -> str:
        """The service that is the broker (a group of them: its name, which starts it
        whole); each compose service (and local process) is named after its broker."""
        return self.broker.group or self.settings.broker

    def broker_primary(self) -> str:
        """The broker's process that leads now (``LocalBroker.primary``): the one a
        failover scenario kills."""
        found = self.broker.primary() if self.broker.group else self.broker_service
        if found is None:
            raise RuntimeError("no broker process leads now")
        return found

    @property
    def rabbitmq_ui(self) -> str | None:
        """RabbitMQ's management UI, when this stack runs its own RabbitMQ."""
        if self.rabbitmq is None or self.rabbitmq.management_port is None:
            return None
        return f"http://127.0.0.1:{self.rabbitmq.management_port}"

    @property
    def appendonly(self) -> bool:
        return self.redis_server.appendonly

    @property
    def fsync_lag(self) -> float:
        """Seconds until a write to the broker is on disk: none (Redis: appendfsync
        always; RabbitMQ: a confirmed persistent message)."""
        return 0.0

    @property
    def worker_processes(self) -> int:
        """How many tasks the Celery side runs at once."""
        return self.worker_concurrency * self.workers

    def service_of(self, runner: str) -> str | None:
        """The service whose process (or pool child) has the runner's PID."""
        try:
            pid = int(runner.split(":")[1])
        except (IndexError, ValueError):
            return None
        for name, proc in self.procs.items():
            if proc.pid is not None and proc.alive and pid in tree_pids(proc.pid):
                return name
        return None

    def kill_runner(self, runner: str) -> None:
        """SIGKILL the one process the runner names (it must be one of this stack's)."""
        if self.service_of(runner) is None:
            raise RuntimeError(f"{runner} is not a process of this stack")
        pid = int(runner.split(":")[1])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def settings_for(self, service: str) -> Settings:
        return self._settings.replace(**self.service_settings.get(service, {}))

    def process_env(self, service: str | None = None) -> dict[str, str]:
        """The environment a Python process of this stack gets: its settings, explicitly."""
        names = {name.upper() for name in Settings.model_fields}
        # The parent's settings (and Celery's own CELERY_BROKER_URL) must not leak in.
        env = {k: v for k, v in os.environ.items() if k not in names and k != "CELERY_BROKER_URL"}
        settings = self.settings_for(service) if service else self._settings
        env.update(settings.to_env(), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        return env

    def url(self, impl: str) -> str:
        return f"http://127.0.0.1:{self.ports[API[impl]]}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['flower']}"

    def _argv(self, service: str) -> list[str]:
        if service == "redis":
            return self.redis_server.argv()
        if service == "rabbitmq" and self.rabbitmq is not None:
            return self.rabbitmq.argv()
        if service == "epmd" and self.rabbitmq is not None:
            return self.rabbitmq.epmd_argv()
        argv = python_argv(
            service,
            port=self.ports.get(service, 0),
            stack=self.redis_server.port,
            workdir=self.workdir,
            concurrency=self.worker_concurrency,
        )
        if service in API.values():
            if self.graceful_timeout is not None:
                # uvicorn takes whole seconds only.
                argv += ["--timeout-graceful-shutdown", str(int(self.graceful_timeout))]
            # An API that holds its tasks in process memory runs ``bg_workers`` processes.
            holds = service in IN_PROCESS_APIS
            processes = max(self.api_processes, self.bg_workers if holds else 1)
            if processes > 1:
                argv += ["--workers", str(processes)]
        return argv

    def _proc(self, service: str) -> Proc:
        argv = self._argv(service)
        if service in ("rabbitmq", "epmd") and self.rabbitmq is not None:
            env = self.rabbitmq.process_env()
        else:
            env = self.process_env(service)
        proc = self.procs.get(service)
        if proc is None or proc.argv != argv or proc.env != env:
            proc = Proc(service, argv, env, self.workdir / f"{service}.out")
            self.procs[service] = proc
        return proc

    # --- control ------------------------------------------------------------------------

    def start(self, service: str, timeout: float = 60) -> None:
        """Start it (if it is not running) and wait until it is ready."""
        self.start_many((service,), timeout)

    def start_many(self, services: Sequence[str], timeout: float = 60) -> None:
        """Start these together, then wait until each is ready (the servers first:
        the Python services reach them as they start, so they go up side by side)."""
        groups = GROUPS
        servers = [s for s in services if s in groups or not table_entry(s).python]
        python = [s for s in services if s not in groups and table_entry(s).python]
        for group in (servers, python):
            waits = [w for w in (self._launch(s, timeout) for s in group) if w is not None]
            for wait in waits:
                wait()

    def _launch(self, service: str, timeout: float) -> Callable[[], None] | None:
        """Start one service's process; how to wait for it to be ready (None: nothing to do)."""
        group = self.broker.boot_group(service, self.procs)
        if group is not None:
            return group
        if service == "rabbitmq" and self.rabbitmq is None:
            return None  # a shared RabbitMQ (a virtual host of it): not this stack's to start
        proc = self.procs.get(service)
        if proc is not None and proc.alive:
            return None
        if service == "rabbitmq" and self.rabbitmq is not None:
            # Its own epmd, on a free port: started once, kept across restarts.
            rabbitmq = self.rabbitmq
            epmd, server = self._proc("epmd"), self._proc(service)
            return lambda: rabbitmq.boot(epmd, server, timeout)
        part = self.partitions.get(service)
        if part is not None and not part.proc.alive:
            part.start()
        proc = self._proc(service)
        offset = len(proc.output())
        started = time.time() - 1
        proc.start()
        spec = table_entry(service)

        def wait() -> None:
            if spec.probe == Probe.redis:
                self.redis_server.wait_ready(proc, timeout)
            elif spec.probe == Probe.http:
                wait_http(f"http://127.0.0.1:{self.ports[service]}{spec.ready}", timeout, proc)
                if service in IN_PROCESS_APIS and self.bg_workers > 1:
                    self._wait_for_every_api_process(service, proc, started, timeout)
            elif spec.probe == Probe.output:
                proc.wait_for_output(spec.ready, timeout, after=offset)

        return wait

    def _wait_for_every_api_process(
        self, service: str, proc: Proc, started: float, timeout: float
    ) -> None:
        """Until each of the API's uvicorn processes beats (the heartbeats are in the
        ledger: nothing to wait for with it off). One answering is not all of them:
        requests sent before the others are up would all land on the first one."""
        if not self.settings_for(service).ledger_on:
            return

        def all_up() -> bool:
            beats = self._ledger.runners()
            fresh = [r for r in beats if r.role == service and r.started_at >= started]
            return sum(r.stopped_at is None for r in fresh) >= self.bg_workers

        proc.wait_for(all_up, timeout, f"{self.bg_workers} {service} processes to beat", 0.1)

    def start_all(self, services: tuple[str, ...] | None = None) -> None:
        """Every service (the broker first), or these."""
        if services is None:
            own = ("rabbitmq",) if self.rabbitmq is not None else ()
            services = ("redis", *own, *DEFAULT_STACK, *self.extra_workers)
        self.start_many(services)

    def kill(self, service: str) -> None:
        self.procs[service].kill()

    def terminate(self, service: str, timeout: float = 60) -> int | None:
        """SIGTERM to the main process; SIGKILL to the group if it is still up at
        ``timeout``, and to what is left of the group after a clean exit (a pool
        child the main process did not wait for), as ``Proc.stop`` does."""
        proc = self.procs[service]
        code = proc.terminate(timeout)
        proc.kill()  # the whole group, whichever way the main process went
        return code

    def is_up(self, service: str) -> bool:
        proc = self.procs.get(service)
        return proc is not None and proc.alive

    def status(self) -> dict[str, ServiceState]:
        out = {}
        for service in self.services:
            proc = self.procs.get(service)
            up = proc is not None and proc.alive
            pid = proc.pid if proc is not None and up else None
            out[service] = ServiceState(
                service,
                up,
                detail=f"pid {pid}" if pid else "",
                pid=pid,
                since=proc.started_at if proc is not None and up else None,
            )
        return out

    def reconfigure(self, service: str, timeout: float = 90, **overrides: object) -> None:
        self.service_settings[service] = {**self.service_settings.get(service, {}), **overrides}
        if self.is_up(service):
            self.terminate(service, timeout)
        self.start(service, timeout)

    def ledger(self) -> LocalLedger:  # a LedgerView
        return self._ledger

    def purge_queue(self, impl: Implementation) -> None:
        service, (program, *rest) = purge_command(impl)
        # The program of this interpreter's environment (python, or a library's CLI), as the
        # services run theirs (``python_argv``), whatever PATH says.
        found = Path(sys.executable).with_name(program)
        argv = [str(found) if found.exists() else program, *rest]
        subprocess.run(
            argv, env=self.process_env(service), cwd=REPO_ROOT, check=True,
            capture_output=True, timeout=60,
        )  # fmt: skip

    @contextlib.contextmanager
    def extra_api(self, impl: str, **overrides: object) -> Iterator[str]:
        """Another uvicorn of this implementation's API, with ``overrides`` (stopped
        when the block ends)."""
        service = API[impl]
        port = free_port()
        argv = [*python_argv(service, port=port), "--log-level", "warning"]
        env = {
            **self.process_env(service),
            **self.settings_for(service).replace(**overrides).to_env(),
        }
        name = f"{service}-{len(self.procs)}"
        proc = Proc(name, argv, env, self.workdir / f"{name}.out")
        self.procs[name] = proc  # close() stops it as well
        proc.start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/health", 60, proc)
            yield url
        finally:
            proc.stop()

    def effect_lines(self) -> dict[str, int]:
        if not self.log_file.exists():
            return {}
        with self.log_file.open(encoding="utf-8") as f:
            return count_effect_lines(f)

    def output(self, service: str) -> str:
        proc = self.procs.get(service)
        # One file per service, appended to by every restart.
        return proc.output() if proc is not None else ""

    def outputs(self) -> str:
        """Every process's output, for a failing test's report."""
        return "\n".join(
            f"===== {name}\n{proc.output()[-4000:]}" for name, proc in self.procs.items()
        )

    def memory(self) -> dict[str, Memory]:
        """RSS and PSS of each running service's process tree (psutil, Linux's PSS)."""
        out = {}
        for name, proc in self.procs.items():
            if proc.alive and proc.pid is not None and (found := tree_memory(proc.pid)):
                out[name] = Memory(*found)
        return out

    def cut(self, service: str) -> None:
        """Stop every byte between ``service`` and its broker (a partition); its
        connections stay open."""
        self.partitions[service].cut()

    def heal(self, service: str) -> None:
        self.partitions[service].heal()

    def close(self) -> None:
        self._ledger.close()
        for part in self.partitions.values():
            part.stop()
        # The producers and consumers first, side by side, then their brokers: a
        # worker's warm shutdown still reaches its broker.
        python: list[Proc] = []
        servers: list[Proc] = []
        for proc in reversed(self.procs.values()):
            (python if proc.argv[:1] == [sys.executable] else servers).append(proc)
        for batch in (python, servers):
            try:
                stop_all(batch)
            except Exception:  # teardown must reach every process
                logger.exception("stopping %s", ", ".join(p.name for p in batch))

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
