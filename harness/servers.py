"""A redis-server of its own: on a free port (or the one given), in a directory of its own.

Never the machine's shared instance: every test, experiment and ``make dev`` run
that needs a Redis it does not find starts one here and stops it by PID.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import redis

from harness.procs import Proc, wait_until


def binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: {hint}")
    return path


@dataclass(frozen=True)
class RedisServer:
    """How to run one redis-server. ``appendonly``: the append-only file (queued tasks
    and the ledger survive a restart); ``appendfsync`` "always" puts every write on
    disk before it is answered, so a kill right after a request loses none of it."""

    port: int
    directory: Path
    appendonly: bool = False
    appendfsync: str = "always"
    password: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [
            binary("redis-server", "apt-get install -y redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def wait_ready(self, proc: Proc, timeout: float = 30) -> None:
        def pong() -> bool:
            if not proc.alive:
                raise RuntimeError(f"redis-server exited:\n{proc.output()[-2000:]}")
            return self.answers()

        wait_until(pong, timeout, f"redis-server on port {self.port} to answer PING")
