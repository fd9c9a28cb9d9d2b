"""``ComposeTarget``: a running compose project driven as a ``Target``.

The stack belongs to its user: a ``ComposeTarget`` reads its settings and ports
from the running containers (``docker inspect``, ``docker compose port``),
changes a service's settings only when asked (``reconfigure``, which recreates
that one container) and never stops the project. Every compose command goes
through ``harness.compose``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.compose import (
    CONTAINER_PORTS,
    Compose,
    env_list,
    option,
    parse_memory,
    published_env,
    service_states,
    settings_from_env,
    worker_concurrency,
)
from harness.procs import Timeout, wait_http, wait_until
from harness.target import API, RUNS_THE_WORK, Memory, ServiceState, Unsupported, purge_command
from shared.models import Implementation, RunnerRecord, TaskRecord
from shared.services import DEFAULT_IMPLEMENTATIONS, SERVICES, Probe, implementation_of
from shared.settings import Settings
from shared.work import count_effect_lines

logger = logging.getLogger(__name__)


@dataclass
class ApiLedger:
    """The ledger through whichever API answers (compose does not publish Redis)."""

    urls: Mapping[str, str]

    def _get(self, path: str, params: Mapping[str, str | float | int]) -> Any:
        errors = []
        # Every API reads the same ledger: the first that answers will do.
        for impl, url in self.urls.items():
            try:
                r = httpx.get(url + path, params=dict(params), timeout=10)
                if r.status_code == 200:
                    return r.json()
                errors.append(f"{impl}: {r.status_code}")
            except httpx.HTTPError as exc:
                errors.append(f"{impl}: {exc}")
        raise RuntimeError(f"no API could read the ledger ({'; '.join(errors)})")

    def records(
        self, *, implementation: Implementation | None = None, since: float | None = None
    ) -> list[TaskRecord]:
        params: dict[str, str | float | int] = {"limit": 5000}
        if implementation is not None:
            params["implementation"] = implementation.value
        if since is not None:
            params["since"] = since
        return [TaskRecord.model_validate(x) for x in self._get("/tasks", params)]

    def records_of(self, task_ids: list[str]) -> dict[str, TaskRecord]:
        wanted = set(task_ids)
        return {r.task_id: r for r in self.records() if r.task_id in wanted}

    def runners(self) -> list[RunnerRecord]:
        return [RunnerRecord.model_validate(x) for x in self._get("/runners", {})]


# docker-compose.partition.yml: the worker whose way to Redis can be cut, and the proxy.
PARTITIONED, LINK = "worker-2", "broker-link"


@dataclass
class ComposeTarget:
    """A running ``docker compose`` project, as it is."""

    compose: Compose = field(default_factory=Compose)
    urls: dict[str, str] = field(default_factory=dict)
    name: str = "compose"
    opened_at: float = field(default_factory=time.time)
    _settings: dict[str, Settings] = field(default_factory=dict)

    @classmethod
    def attach(
        cls,
        *,
        project: str | None = None,
        files: Sequence[str] = (),
        urls: Mapping[str, str] | None = None,
        experiment_routes: bool = True,
    ) -> ComposeTarget:
        """The running project; its URLs from the published ports unless given
        (``urls``, per service); its
        compose files, unless given, from the labels compose put on its containers.
        ``experiment_routes``: the APIs serve them (``ensure_experiment_routes``)."""
        compose = Compose(project, files)
        if not files:
            compose.files = compose.config_files()
        target = cls(compose)
        found = {s: compose.published(s, p) for s, p in CONTAINER_PORTS.items()}
        target.urls = {s: u for s, u in found.items() if u}
        target.urls.update(urls or {})
        # The chapter's two always; a further implementation where its profile runs.
        for impl in DEFAULT_IMPLEMENTATIONS:
            if API[impl] not in target.urls:
                raise RuntimeError(f"the compose project publishes no {API[impl]} ({impl}) port")
        if experiment_routes:
            target.ensure_experiment_routes()
        return target

    def ensure_experiment_routes(self, timeout: float = 90) -> None:
        """The experiments drive routes docker-compose.yml leaves off (``EXPERIMENT_ROUTES``
        defaults to 0): an API running without them is recreated with them on, that
        one container (``reconfigure``), which keeps them on from then on."""
        for service in self.apis.values():
            if self.settings_for(service).experiment_routes:
                continue
            logger.warning("recreating %s with EXPERIMENT_ROUTES=1 (the experiments')", service)
            self.reconfigure(service, timeout, experiment_routes=True)
            if not self.settings_for(service).experiment_routes:
                # docker-compose.prod.yml says "0" whatever the environment says.
                logger.warning(
                    "%s still runs without the experiment routes: its compose files "
                    "force EXPERIMENT_ROUTES off (docker-compose.prod.yml)",
                    service,
                )

    # --- what it runs ---------------------------------------------------------------

    def settings_for(self, service: str) -> Settings:
        if service not in self._settings:
            env = env_list(self.compose.inspect(service)["Config"]["Env"] or [])
            self._settings[service] = settings_from_env(env)
        return self._settings[service]

    @property
    def settings(self) -> Settings:
        """The worker's: it runs the Celery side's work (the APIs share the same block)."""
        return self.settings_for("worker")

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(row.get("Service")) for row in self.compose.ps()))

    @property
    def worker_processes(self) -> int:
        cmd = self.compose.inspect("worker")["Config"]["Cmd"] or []
        workers = [row for row in self.compose.ps() if row.get("Service") == "worker"]
        return worker_concurrency(cmd) * max(len(workers), 1)

    @property
    def appendonly(self) -> bool:
        return option(self.compose.inspect("redis")["Config"]["Cmd"] or [], "appendonly") == "yes"

    @property
    def fsync_lag(self) -> float:
        if self.settings.broker != "redis":
            return 0.0  # RabbitMQ confirms a persistent message once it has it
        # Redis's default with AOF on is everysec; "always" fsyncs every write.
        cmd = self.compose.inspect("redis")["Config"]["Cmd"] or []
        return 0.0 if option(cmd, "appendfsync") == "always" else 1.1

    @property
    def broker_service(self) -> str:
        # Each compose service (and local process) is named after its broker.
        return self.settings.broker

    @property
    def rabbitmq_ui(self) -> str | None:
        return self.urls.get("rabbitmq")

    def broker_primary(self) -> str:
        return self.broker_service

    def cut(self, service: str) -> None:
        """Freeze the proxy ``service`` reaches Redis through (docker-compose.partition.yml:
        worker-2 through broker-link): ``docker compose pause``, the cgroup freezer."""
        self.compose.run("pause", self._link(service))

    def heal(self, service: str) -> None:
        self.compose.run("unpause", self._link(service))

    def _link(self, service: str) -> str:
        if service != PARTITIONED or LINK not in self.services:
            raise Unsupported(
                f"a partition of {service}: compose cuts {PARTITIONED} only, through "
                f"{LINK} (-f docker-compose.yml -f docker-compose.partition.yml)"
            )
        return LINK

    def kill_runner(self, runner: str) -> None:
        raise Unsupported("one process of a service: compose runs one per container")

    def service_of(self, runner: str) -> str | None:
        """The service of the container whose hostname the runner names."""
        host = runner.split(":")[0]
        for row in self.compose.ps():
            cid = str(row.get("ID", ""))
            if cid and (cid.startswith(host) or host.startswith(cid)):
                return str(row.get("Service"))
        return None

    def url(self, impl: str) -> str:
        return self.urls[API[impl]]

    @property
    def apis(self) -> dict[str, str]:
        """The implementations whose API this project publishes (a profile adds some)."""
        return {impl: api for impl, api in API.items() if api in self.urls}

    @property
    def flower_url(self) -> str | None:
        return self.urls.get("flower")

    # --- control ------------------------------------------------------------------------

    def _wait_ready(self, service: str, since: float, timeout: float) -> None:
        """As the table says (``Service.probe``): an API's URL answers, a worker's log
        line shows; anything else (or a service the project does not publish) runs."""
        spec = SERVICES.get(service)
        probe = spec.probe if spec is not None else Probe.running
        if probe == Probe.http and service in API.values():
            wait_http(self.url(implementation_of(service)) + spec.ready, timeout)  # type: ignore[union-attr]
        elif probe == Probe.output and spec is not None and spec.runs_work:
            rx = re.compile(spec.ready)
            wait_until(
                lambda: rx.search(self.compose.logs(service, since)),
                timeout,
                f"{service} to print {spec.ready!r}",
                0.5,
            )
        else:
            wait_until(lambda: self.is_up(service), timeout, f"{service} to run", 0.3)

    def start(self, service: str, timeout: float = 60) -> None:
        if self.is_up(service):
            return
        since = time.time() - 1
        self.compose.run("start", service, timeout=timeout)
        self._wait_ready(service, since, timeout)

    def kill(self, service: str) -> None:
        self.compose.run("kill", "-s", "SIGKILL", service)
        self._wait_down(service, 30)

    def terminate(self, service: str, timeout: float = 60) -> int | None:
        # docker compose stop: SIGTERM, then SIGKILL after the grace period (-t).
        started = time.monotonic()
        self.compose.run("stop", "-t", f"{int(timeout)}", service, timeout=timeout + 30)
        logger.info("%s stopped after %.1fs", service, time.monotonic() - started)
        return None

    def _wait_down(self, service: str, timeout: float) -> None:
        try:
            wait_until(lambda: not self.is_up(service), timeout, f"{service} to stop", 0.3)
        except Timeout:
            logger.warning("%s still running %.0fs after the signal", service, timeout)
            raise

    def is_up(self, service: str) -> bool:
        return service_states(self.compose.ps(), [service])[service]

    def status(self) -> dict[str, ServiceState]:
        rows = self.compose.ps()
        out = {}
        for service in dict.fromkeys(str(row.get("Service")) for row in rows):
            mine = [row for row in rows if row.get("Service") == service]
            running = [row for row in mine if row.get("State") == "running"]
            detail = ", ".join(str(row.get("Name", "")) for row in running)
            out[service] = ServiceState(service, bool(running), detail=detail)
        return out

    def reconfigure(self, service: str, timeout: float = 90, **overrides: object) -> None:
        if service in API.values():
            # The compose target's APIs keep the experiments' routes, unless told otherwise.
            overrides.setdefault("experiment_routes", True)
        current = self.settings_for(service)
        changed = current.replace(**overrides)
        container = self.compose.inspect(service)
        # Compose interpolates the file anew from this environment: the service
        # must come back on the port (and address) it has now, not the defaults.
        env = {
            **changed.to_env(),
            "WORKER_CONCURRENCY": str(worker_concurrency(container["Config"]["Cmd"] or [])),
            **published_env(service, container["HostConfig"].get("PortBindings") or {}),
        }
        since = time.time() - 1
        self.compose.recreate(service, env, timeout=max(timeout, 60) + 120)
        self._settings.pop(service, None)
        self._wait_ready(service, since, timeout)

    def ledger(self) -> ApiLedger:
        return ApiLedger({impl: self.url(impl) for impl in self.apis})

    def purge_queue(self, impl: Implementation) -> None:
        service, argv = purge_command(impl)
        self.compose.exec(service, *argv, check=True)

    @contextlib.contextmanager
    def extra_api(self, impl: str, **overrides: object) -> Iterator[str]:
        raise Unsupported("a compose stack runs only the processes its file declares")
        yield ""  # pragma: no cover

    def effect_lines(self) -> dict[str, int]:
        # What runs the work shares the log file's volume; read it where it is up.
        running = set(self.services)
        for service in (s for s in RUNS_THE_WORK.values() if s in running):
            out = self.compose.exec(service, "sh", "-c", 'cat "$LOG_FILE" 2>/dev/null || true')
            if out:
                return count_effect_lines(out.splitlines())
        return {}

    def output(self, service: str) -> str:
        return self.compose.logs(service, self.opened_at)

    def memory(self) -> dict[str, Memory]:
        """``docker stats`` per service (the cgroup's memory; RSS and PSS the same figure)."""
        ids = {cid: s for s in self.services for cid in self.compose.container_ids(s)}
        done = subprocess.run(
            ["docker", "stats", "--no-stream", "--format", "{{json .}}", *ids],
            capture_output=True,
            text=True,
            timeout=60,
        )
        out: dict[str, Memory] = {}
        for line in done.stdout.splitlines():
            row = json.loads(line)
            service = next((s for i, s in ids.items() if i.startswith(row["ID"])), None)
            if service:
                used = parse_memory(row["MemUsage"].split("/")[0])
                old = out.get(service)
                total = used + (old.rss if old else 0.0)
                out[service] = Memory(total, total, (old.processes if old else 0) + 1)
        return out

    def close(self) -> None:
        """The stack belongs to the user: leave it running."""
