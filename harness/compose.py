"""Every ``docker compose`` command the project runs from Python, in one place,
and ``ComposeTarget``: a running compose project driven as a ``Target``.

The stack belongs to its user: a ``ComposeTarget`` reads its settings and ports
from the running containers (``docker inspect``, ``docker compose port``),
changes a service's settings only when asked (``reconfigure``, which recreates
that one container) and never stops the project. The parsers (``parse_ps``,
``worker_concurrency``, ``published_env``, ``parse_memory``, ...) are pure, and unit-tested.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness.procs import REPO_ROOT, Timeout, wait_http, wait_until
from harness.target import API, RUNS_THE_WORK, Memory, ServiceState, Unsupported, purge_command
from shared.models import Implementation, RunnerRecord, TaskRecord
from shared.services import DEFAULT_IMPLEMENTATIONS, SERVICES, Probe, implementation_of
from shared.settings import Settings, explicit_settings
from shared.work import count_effect_lines

logger = logging.getLogger(__name__)

# Where each service listens inside its container (compose publishes these), and
# the variables docker-compose.yml publishes them on (host side).
CONTAINER_PORTS = {name: s.port for name, s in SERVICES.items() if s.port is not None}
PORT_VARIABLES = {
    name: s.port_variable for name, s in SERVICES.items() if s.port_variable is not None
}


# --- pure parsing ---------------------------------------------------------------------------


def parse_ps(out: str) -> list[dict[str, Any]]:
    """``docker compose ps --format json``: one JSON array (older Compose v2) or one
    object per line (newer); either way, the rows."""
    rows: list[dict[str, Any]] = []
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows += parsed if isinstance(parsed, list) else [parsed]
    return rows


def service_states(rows: Sequence[Mapping[str, Any]], services: Sequence[str]) -> dict[str, bool]:
    """Per service: is at least one of its containers running?"""
    running = {row.get("Service") for row in rows if row.get("State") == "running"}
    return {name: name in running for name in services}


def published_env(service: str, bindings: Mapping[str, Any]) -> dict[str, str]:
    """The variables compose published ``service``'s port with, from its container's
    ``HostConfig.PortBindings`` (what docker bound, not the URL a client uses)."""
    found = bindings.get(f"{CONTAINER_PORTS.get(service)}/tcp") or []
    if service not in PORT_VARIABLES or not found:
        return {}
    env = {PORT_VARIABLES[service]: str(found[0]["HostPort"])}
    if found[0].get("HostIp"):
        env["PUBLISH_ADDRESS"] = str(found[0]["HostIp"])
    return env


def worker_concurrency(argv: Sequence[str], default: int = 2) -> int:
    """``--concurrency=N`` (or ``-c N``, ``--concurrency N``) in a worker's command."""
    args = [str(a) for a in argv]
    for i, arg in enumerate(args):
        if arg.startswith("--concurrency="):
            return int(arg.split("=", 1)[1])
        if arg in ("--concurrency", "-c") and i + 1 < len(args):
            return int(args[i + 1])
    return default


def option(argv: Sequence[str], name: str) -> str | None:
    """``--name value`` (or ``--name=value``) in a command line."""
    args = [str(a) for a in argv]
    for a, b in itertools.pairwise([*args, ""]):
        if a == f"--{name}":
            return b
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The ``Settings`` a container runs with, from its environment (as its process reads it)."""
    names = {name.upper(): name for name in Settings.model_fields}
    return explicit_settings(**{names[k]: v for k, v in env.items() if k in names})


def env_list(items: Sequence[str]) -> dict[str, str]:
    """``docker inspect``'s ``Config.Env`` ("KEY=value" strings) as a mapping."""
    return dict(item.split("=", 1) for item in items if "=" in item)


# --- the commands ----------------------------------------------------------------------------


@dataclass
class Compose:
    """``docker compose`` for one project: every call the harness makes goes through here."""

    project: str | None = None
    files: Sequence[str] = ()
    project_dir: Path = REPO_ROOT

    def argv(self, *args: str) -> list[str]:
        argv = ["docker", "compose"]
        for f in self.files:
            argv += ["-f", f]
        if self.project:
            argv += ["-p", self.project]
        return [*argv, *args]

    def run(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> str:
        argv = self.argv(*args)
        done = subprocess.run(
            argv,
            cwd=self.project_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def ps(self) -> list[dict[str, Any]]:
        return parse_ps(self.run("ps", "-a", "--format", "json", check=False, timeout=30))

    def container_ids(self, service: str) -> list[str]:
        return self.run("ps", "-a", "-q", service, check=False, timeout=30).split()

    def inspect(self, service: str) -> dict[str, Any]:
        ids = self.container_ids(service)
        if not ids:
            raise RuntimeError(f"no {service} container in the compose project: is the stack up?")
        done = subprocess.run(
            ["docker", "inspect", ids[0]], capture_output=True, text=True, timeout=30, check=True
        )
        info: dict[str, Any] = json.loads(done.stdout)[0]
        return info

    def config_files(self) -> list[str]:
        """The compose files the running project was brought up with (its labels)."""
        for name in dict.fromkeys(str(row.get("Service")) for row in self.ps()):
            labels = self.inspect(name).get("Config", {}).get("Labels") or {}
            found = labels.get("com.docker.compose.project.config_files")
            if found:
                return str(found).split(",")
        return []

    def published(self, service: str, port: int) -> str | None:
        """``http://host:port`` where compose publishes ``service``'s ``port``, if it does."""
        out = self.run("port", service, str(port), check=False, timeout=30).strip()
        if not out or ":" not in out:
            return None
        host, _, published = out.splitlines()[0].rpartition(":")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]", "") else host
        return f"http://{host}:{published}"

    def logs(self, service: str, since: float) -> str:
        return self.run("logs", "--no-color", "--since", f"{since:.3f}", service, check=False)

    def exec(self, service: str, *cmd: str, timeout: float = 60, check: bool = False) -> str:
        return self.run("exec", "-T", service, *cmd, timeout=timeout, check=check)

    def recreate(self, service: str, env: Mapping[str, str], timeout: float = 180) -> None:
        """``up -d --force-recreate`` one service, its settings interpolated from ``env``."""
        full = {**os.environ, **env}
        if self.project:
            full["COMPOSE_PROJECT_NAME"] = self.project  # names the image in the compose file
        self.run(
            "up", "-d", "--no-deps", "--no-build", "--force-recreate", service,
            env=full, timeout=timeout,
        )  # fmt: skip


# --- the target ------------------------------------------------------------------------------


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


_UNITS = {"b": 1, "kib": 1024, "mib": 2**20, "gib": 2**30, "kb": 1000, "mb": 1e6, "gb": 1e9}


def parse_memory(text: str) -> float:
    """``docker stats``'s "12.5MiB" in MiB."""
    m = re.match(r"\s*([\d.]+)\s*([a-zA-Z]+)", text)
    if not m:
        return 0.0
    return float(m.group(1)) * _UNITS.get(m.group(2).lower(), 1) / 2**20
