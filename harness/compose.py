"""Every ``docker compose`` command the project runs from Python, in one place
(``Compose``), and the pure parsers of what compose and docker answer
(``parse_ps``, ``worker_concurrency``, ``published_env``, ``parse_memory``, ...),
unit-tested. ``harness.compose_target`` drives a running project with them.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.procs import REPO_ROOT
from shared.services import SERVICES
from shared.settings import Settings, explicit_settings

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


_UNITS = {"b": 1, "kib": 1024, "mib": 2**20, "gib": 2**30, "kb": 1000, "mb": 1e6, "gb": 1e9}


def parse_memory(text: str) -> float:
    """``docker stats``'s "12.5MiB" in MiB."""
    m = re.match(r"\s*([\d.]+)\s*([a-zA-Z]+)", text)
    if not m:
        return 0.0
    return float(m.group(1)) * _UNITS.get(m.group(2).lower(), 1) / 2**20


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
