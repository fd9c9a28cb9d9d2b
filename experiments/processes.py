"""Real processes on free ports, for the tests, the experiments and the lab.

Every process runs in its own process group and is stopped by PID (or group),
never by name. Every wait has a deadline. ``LocalStack`` is the local target:
redis-server, both APIs, a Celery worker and beat, under the same service names
as ``docker-compose.yml``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


class Timeout(AssertionError):
    """A bounded wait ran out."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> object:
    """Poll ``predicate`` until it returns something truthy; raise ``Timeout`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise Timeout(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """One child process, in a process group of its own, with its output in a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Proc:
        if self.alive:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"\n--- start {self.name}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: killpg reaches the children
            )
        logger.info("started %s (pid %d)", self.name, self.popen.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig: signal.Signals, *, group: bool = False) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the whole group (a Celery worker's pool children included)."""
        self.send(signal.SIGKILL, group=True)
        self.wait(10)

    def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM to the main process only (a graceful shutdown); wait up to ``timeout``."""
        self.send(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 5) -> None:
        """Teardown: graceful if it goes quickly, then SIGKILL to the group, always."""
        if self.popen is None:
            return
        if self.alive:
            self.terminate(grace)
        self.send(signal.SIGKILL, group=True)  # leftovers in the group, if any
        self.wait(10)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, pattern: str, timeout: float, *, after: int = 0) -> None:
        rx = re.compile(pattern)

        def seen() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited:\n{self.output()[-3000:]}")
            return bool(rx.search(self.output()[after:]))

        wait_until(seen, timeout, f"{self.name} to print {pattern!r}")


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server not found on PATH: apt-get install -y redis-server")
    return path


def wait_http(url: str, timeout: float, proc: Proc | None = None) -> None:
    def up() -> bool:
        if proc is not None and not proc.alive:
            raise RuntimeError(f"{proc.name} exited:\n{proc.output()[-3000:]}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout, f"{url} to answer 200", interval=0.1)


SERVICES = ("redis", "bg-api", "celery-api", "worker", "beat")


class LocalStack:
    """The whole comparison as local processes on free ports, in one work directory.

    ``env`` holds the settings (environment variables) every Python process gets.
    The services are started on demand; ``close`` stops every one of them.
    """

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        appendonly: bool = False,
        worker_concurrency: int = 2,
        graceful_timeout: int | None = None,
        redis_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis_port = redis_port or free_port()
        self.bg_port = free_port()
        self.celery_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.log_file = self.workdir / "log.txt"
        self.settings_env: dict[str, str] = {
            "REDIS_URL": self.redis_url,
            "LOG_FILE": str(self.log_file),
            "NOTIFICATION_DELAY_SECONDS": "0.2",
            "NOTIFICATION_FAIL_FIRST_ATTEMPTS": "0",
            "CELERY_VISIBILITY_TIMEOUT": "3",
            "CELERY_RESTORE_INTERVAL": "0.5",
            "BEAT_INTERVAL_SECONDS": "3600",
            "RETRY_BACKOFF_SECONDS": "0.2",
            **(env or {}),
        }
        self.appendonly = appendonly
        self.worker_concurrency = worker_concurrency
        self.graceful_timeout = graceful_timeout
        self.procs: dict[str, Proc] = {}
        self._worker_starts = 0

    # --- process definitions ------------------------------------------------------

    def process_env(self) -> dict[str, str]:
        """The environment every Python process of this stack gets (its settings included)."""
        env = {k: v for k, v in os.environ.items() if k not in self.settings_env}
        # The parent's .env must not leak in: the stack's settings are explicit.
        env.update(self.settings_env, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        return env

    def _proc(self, name: str, argv: list[str]) -> Proc:
        proc = self.procs.get(name)
        if proc is None or proc.argv != argv or proc.env != self.process_env():
            proc = Proc(name, argv, self.process_env(), self.workdir / f"{name}.out")
            self.procs[name] = proc
        return proc

    def _argv(self, service: str) -> list[str]:
        py = sys.executable
        if service == "redis":
            return [
                redis_server_binary(),
                "--port", str(self.redis_port),
                "--bind", "127.0.0.1",
                "--dir", str(self.workdir),
                "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always",
            ]  # fmt: skip
        if service in ("bg-api", "celery-api"):
            module = "fastapi_bg.main:app" if service == "bg-api" else "celery_app.main:app"
            port = self.bg_port if service == "bg-api" else self.celery_port
            argv = [py, "-m", "uvicorn", module, "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--log-level", "info", "--no-access-log"]
            if self.graceful_timeout is not None:
                # uvicorn takes whole seconds only.
                argv += ["--timeout-graceful-shutdown", str(int(self.graceful_timeout))]
            return argv
        if service == "worker":
            return [
                py, "-m", "celery", "-A", "celery_app.worker", "worker",
                "--pool", "prefork", "--concurrency", str(self.worker_concurrency),
                "--loglevel", "INFO", "-E",
                "--hostname", f"worker-{self.redis_port}@%h",
                "--without-mingle", "--without-gossip",
            ]  # fmt: skip
        if service == "beat":
            return [
                py, "-m", "celery", "-A", "celery_app.worker", "beat",
                "--loglevel", "INFO",
                "--schedule", str(self.workdir / "celerybeat-schedule"),
            ]  # fmt: skip
        raise ValueError(f"unknown service {service!r}")

    # --- control --------------------------------------------------------------------

    @property
    def bg_url(self) -> str:
        return f"http://127.0.0.1:{self.bg_port}"

    @property
    def celery_url(self) -> str:
        return f"http://127.0.0.1:{self.celery_port}"

    def url(self, side: str) -> str:
        return self.bg_url if side == "bg" else self.celery_url

    def start(self, service: str, timeout: float = 30) -> Proc:
        proc = self._proc(service, self._argv(service))
        offset = len(proc.output())
        proc.start()
        if service == "redis":
            client = redis.Redis(port=self.redis_port, socket_connect_timeout=0.5)

            def pong() -> bool:
                if not proc.alive:
                    raise RuntimeError(f"redis exited:\n{proc.output()[-2000:]}")
                try:
                    return bool(client.ping())
                except redis.RedisError:
                    return False

            wait_until(pong, timeout, "redis-server to answer PING")
            client.close()
        elif service == "bg-api":
            wait_http(self.bg_url + "/health", timeout, proc)
        elif service == "celery-api":
            wait_http(self.celery_url + "/health", timeout, proc)
        elif service == "worker":
            proc.wait_for_output(r"ready\.", timeout, after=offset)
        elif service == "beat":
            proc.wait_for_output(r"beat: Starting", timeout, after=offset)
        return proc

    def start_all(self, services: tuple[str, ...] = SERVICES) -> None:
        for service in services:
            self.start(service)

    def kill(self, service: str) -> None:
        """SIGKILL: the process (and its group) dies at once, nothing runs to completion."""
        self.procs[service].kill()

    def terminate(self, service: str, timeout: float = 60) -> int | None:
        """SIGTERM: the graceful shutdown; returns the exit code, None if still running."""
        return self.procs[service].terminate(timeout)

    def is_up(self, service: str) -> bool:
        proc = self.procs.get(service)
        return proc is not None and proc.alive

    def set_env(self, **values: str) -> None:
        """Change settings for the processes started from now on."""
        self.settings_env.update(values)

    def redis(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.redis_port, db=db, decode_responses=True, socket_timeout=2)

    def close(self) -> None:
        # Reverse order: the producers and consumers go before their broker.
        for name in reversed(list(self.procs)):
            try:
                self.procs[name].stop()
            except Exception:  # teardown must reach every process
                logger.exception("stopping %s", name)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def outputs(self) -> str:
        """Every process's output, for a failing test's report."""
        return "\n".join(
            f"===== {name}\n{proc.output()[-4000:]}" for name, proc in self.procs.items()
        )


@contextlib.contextmanager
def local_stack(
    workdir: Path, env: Mapping[str, str] | None = None, **kwargs: object
) -> Iterator[LocalStack]:
    stack = LocalStack(workdir, env, **kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stack.close()
