"""A redis-server or a rabbitmq-server of its own: on free ports, in a directory of its own.

Never the machine's shared instances: every test, experiment and ``make dev`` run
that needs one starts its own here and stops it by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from harness.ports import free_port
from harness.procs import Proc


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
    # More options, as redis-server takes them ("--replicaof", "127.0.0.1 6380", ...).
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [binary("redis-server", "apt-get install -y redis-server")]
        if self.password:
            # From a file of its own, not the command line: a process's argv is in its
            # log's first line (Proc) and in every `ps`. A replica authenticates to its
            # primary with the same one (masterauth).
            conf = self.directory / f"redis-{self.port}.conf"
            conf.write_text(f"requirepass {self.password}\nmasterauth {self.password}\n")
            conf.chmod(0o600)
            argv.append(str(conf))
        argv += [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            *self.extra,
        ]  # fmt: skip
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
        proc.wait_for(self.answers, timeout, f"redis-server on port {self.port} to answer PING")


@dataclass(frozen=True)
class RabbitServer:
    """How to run one rabbitmq-server (Debian's package) of its own.

    Everything it writes (node data, logs, the Erlang cookie) goes under
    ``directory``; it listens on free ports only (AMQP, Erlang distribution,
    the management UI), and registers with an epmd of its own (``epmd_argv``,
    started first, on a free port too), so neither the machine's shared
    RabbitMQ nor its epmd on 4369 is touched. ``/usr/lib/rabbitmq/bin/`` and not
    the ``/usr/sbin`` wrapper: that one switches to the rabbitmq user, who
    cannot write a temp dir of ours.
    """

    directory: Path
    port: int
    dist_port: int
    epmd_port: int
    management_port: int | None = None
    user: str = "bench"
    password: str = "bench-password"
    # Milliseconds a consumer may hold a delivery unacknowledged before RabbitMQ
    # closes its channel (None: RabbitMQ's default, 30 minutes).
    consumer_timeout_ms: int | None = None
    # How often a channel checks that timeout (RabbitMQ's default: every 60 s).
    tick_ms: int = 1000

    BIN = Path("/usr/lib/rabbitmq/bin")

    @classmethod
    def on_free_ports(
        cls,
        directory: Path,
        *,
        management: bool = False,
        consumer_timeout_ms: int | None = None,
    ) -> RabbitServer:
        """One in ``directory``, on ports nothing listens on now (the UI's too, if asked)."""
        return cls(
            directory,
            port=free_port(),
            dist_port=free_port(),
            epmd_port=free_port(),
            management_port=free_port() if management else None,
            consumer_timeout_ms=consumer_timeout_ms,
        )

    @property
    def node(self) -> str:
        return f"bench-{self.port}@localhost"

    def url(self, vhost: str = "/") -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}/{vhost.lstrip('/')}"

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.directory / "home"),  # the Erlang cookie
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_LOGS": "-",  # the log on stdout: the Proc's file
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            # No busy-waiting schedulers: an idle Erlang VM otherwise spins its
            # schedulers for work, and a few nodes beside each other (the tests run
            # side by side) burn a core between them doing nothing.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                f"-rabbit channel_tick_interval {self.tick_ms} "
                "+sbwt none +sbwtdcpu none +sbwtdio none"
            ),
        }

    def process_env(self) -> dict[str, str]:
        """The environment its processes (epmd, the server, rabbitmqctl) run with."""
        return {**os.environ, **self.env()}

    def prepare(self) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        lines = [
            f"listeners.tcp.default = {self.port}",
            # No guest account: the user below is the only one.
            f"default_user = {self.user}",
            f"default_pass = {self.password}",
        ]
        if self.consumer_timeout_ms is not None:
            lines.append(f"consumer_timeout = {self.consumer_timeout_ms}")
        plugins = "[]."
        if self.management_port is not None:
            lines += [
                f"management.tcp.port = {self.management_port}",
                "management.tcp.ip = 127.0.0.1",
            ]
            plugins = "[rabbitmq_management]."
        (self.directory / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (self.directory / "enabled_plugins").write_text(plugins + "\n")

    def epmd_argv(self) -> list[str]:
        return [binary("epmd", "apt-get install -y rabbitmq-server"), "-port", str(self.epmd_port)]

    def argv(self) -> list[str]:
        server = self.BIN / "rabbitmq-server"
        if not server.exists():
            raise RuntimeError(f"{server} not found: apt-get install -y rabbitmq-server")
        return [str(server)]

    def answers(self, vhost: str = "/") -> bool:
        import amqp  # kombu's AMQP client, a dependency of Celery

        connection = amqp.Connection(
            f"127.0.0.1:{self.port}",
            userid=self.user,
            password=self.password,
            virtual_host=vhost,
            connect_timeout=1,
        )
        try:
            connection.connect()
            return True
        except Exception:  # refused, reset, or not booted far enough yet
            return False
        finally:
            with contextlib.suppress(Exception):
                connection.collect()

    def wait_ready(self, proc: Proc, timeout: float = 60) -> None:
        what = f"rabbitmq-server on port {self.port} to accept a connection"
        proc.wait_for(self.answers, timeout, what, 0.3)

    def boot(self, epmd: Proc, server: Proc, timeout: float = 60) -> None:
        """Start the server (its epmd first, if that is not running: it outlives a
        restart of the node) and wait until it accepts a connection."""
        self.prepare()
        if not epmd.alive:
            epmd.start()
        server.start()
        self.wait_ready(server, timeout)

    @contextlib.contextmanager
    def running(self, timeout: float = 90) -> Iterator[RabbitServer]:
        """Booted for the block (the output in its directory); both processes
        stopped by process group afterwards, also when it fails to boot."""
        env = self.process_env()
        epmd = Proc("epmd", self.epmd_argv(), env, self.directory / "epmd.out")
        server = Proc("rabbitmq", self.argv(), env, self.directory / "rabbitmq.out")
        try:
            self.boot(epmd, server, timeout)
            yield self
        finally:
            server.stop(grace=10)
            epmd.stop()

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl -n <node> ...`` against this node; its output."""
        done = subprocess.run(
            [str(self.BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.process_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def add_vhost(self, vhost: str) -> str:
        """A virtual host of its own for one stack on a shared server; its URL."""
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, self.user, ".*", ".*", ".*")
        return self.url(vhost)
