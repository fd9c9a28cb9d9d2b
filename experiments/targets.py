"""Where an experiment runs: local processes it starts itself, or a running
``docker compose`` stack. The scenario logic is written once against ``Target``;
only the process control differs.

Service names are compose's: redis, bg-api, celery-api, worker, beat (flower
only in compose). Sides: "bg" and "celery".
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import httpx

from experiments.processes import REPO_ROOT, LocalStack, Timeout, wait_until
from shared.models import Implementation, TaskRecord

logger = logging.getLogger(__name__)


class Target(Protocol):
    name: str

    def url(self, side: str) -> str: ...
    def start(self, service: str, timeout: float = 60) -> object: ...
    def kill(self, service: str) -> None: ...
    def terminate(self, service: str, timeout: float = 60) -> int | None: ...
    def is_up(self, service: str) -> bool: ...
    def close(self) -> None: ...


def health(target: Target, side: str) -> dict[str, str] | None:
    try:
        r = httpx.get(target.url(side) + "/health", timeout=1)
        return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def read_ledger(
    target: Target,
    implementation: Implementation | None = None,
    since: float | None = None,
    limit: int = 5000,
) -> list[TaskRecord]:
    """The ledger through whichever API answers (Redis itself is not published)."""
    params: dict[str, str | float | int] = {"limit": limit}
    if implementation is not None:
        params["implementation"] = implementation.value
    if since is not None:
        params["since"] = since
    errors = []
    for side in ("celery", "bg"):
        try:
            r = httpx.get(target.url(side) + "/tasks", params=params, timeout=5)
            if r.status_code == 200:
                return [TaskRecord.model_validate(x) for x in r.json()]
            errors.append(f"{side}: {r.status_code}")
        except httpx.HTTPError as exc:
            errors.append(f"{side}: {exc}")
    raise RuntimeError(f"no API could read the ledger ({'; '.join(errors)})")


class LocalTarget(LocalStack):
    """Local processes on free ports (the default target)."""

    name = "local"


class ComposeTarget:
    """A running ``docker compose`` stack, driven by ``docker compose kill/stop/start``."""

    name = "compose"

    def __init__(
        self,
        *,
        project_dir: Path = REPO_ROOT,
        project: str | None = None,
        bg_url: str = "http://127.0.0.1:8001",
        celery_url: str = "http://127.0.0.1:8002",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.project_dir = project_dir
        self.project = project
        self.urls = {"bg": bg_url, "celery": celery_url}
        self.extra_args = list(extra_args)

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        argv = ["docker", "compose", *self.extra_args]
        if self.project:
            argv += ["-p", self.project]
        argv += list(args)
        done = subprocess.run(
            argv, cwd=self.project_dir, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def url(self, side: str) -> str:
        return self.urls[side]

    def start(self, service: str, timeout: float = 60) -> object:
        self.compose("start", service, timeout=timeout)
        if service in ("bg-api", "celery-api"):
            side = "bg" if service == "bg-api" else "celery"
            wait_until(lambda: health(self, side), timeout, f"{service} to answer /health", 0.2)
        else:
            self._wait_state(service, running=True, timeout=timeout)
        return None

    def kill(self, service: str) -> None:
        self.compose("kill", "-s", "SIGKILL", service)
        self._wait_state(service, running=False, timeout=30)

    def terminate(self, service: str, timeout: float = 60) -> int | None:
        # docker compose stop: SIGTERM, then SIGKILL after the grace period (-t).
        started = time.monotonic()
        self.compose("stop", "-t", f"{int(timeout)}", service, timeout=timeout + 30)
        logger.info("%s stopped after %.1fs", service, time.monotonic() - started)
        return 0

    def is_up(self, service: str) -> bool:
        out = self.compose("ps", "--format", "json", service, check=False)
        for line in out.splitlines():
            try:
                if json.loads(line).get("State") == "running":
                    return True
            except json.JSONDecodeError:
                continue
        return False

    def _wait_state(self, service: str, *, running: bool, timeout: float) -> None:
        try:
            wait_until(
                lambda: self.is_up(service) == running, timeout, f"{service} up={running}", 0.3
            )
        except Timeout:
            logger.warning("%s did not reach up=%s in %.0fs", service, running, timeout)
            raise

    def close(self) -> None:
        """The stack belongs to the user: leave it running."""
