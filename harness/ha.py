"""The brokers' own answers to a lost machine, started on free ports in a temp dir:
a Redis Sentinel group (a primary, replicas, three sentinels) and a three-node
RabbitMQ cluster (one Erlang cookie, ``join_cluster``). No home-made failover:
each is the broker's own mechanism, run as its docs describe.

Every process is a ``Proc`` the caller registers (a stack's ``procs``), so that it
is killed by process group like any other, and shows in the stack's status.
"""

from __future__ import annotations

import functools
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from harness.ports import free_port
from harness.procs import Proc, wait_until
from harness.servers import RabbitServer, RedisServer, binary

logger = logging.getLogger(__name__)

MASTER = "broker"  # the name the sentinels know the primary by
# min-replicas-max-lag: a replica counts if it acknowledged within this many seconds
# (replicas acknowledge every second; a loaded machine is late now and then).
MAX_LAG = 3


@dataclass
class SentinelGroup:
    """A primary, ``replicas`` replicas and three sentinels (quorum 2), on loopback.

    The data nodes want ``password``; the sentinels want none (loopback only) and
    authenticate to the data nodes with it (``auth-pass``). ``min_replicas``: the
    primary refuses writes unless that many replicas are in sync (redis's
    ``min-replicas-to-write``, with a lag of at most ``MAX_LAG`` seconds)."""

    directory: Path
    replicas: int = 1
    min_replicas: int = 0
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    down_after_ms: int = 1000
    failover_timeout_ms: int = 3000
    nodes: list[RedisServer] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        ports = [free_port() for _ in range(1 + self.replicas)]
        guard: tuple[str, ...] = ()
        if self.min_replicas:
            guard = (
                "--min-replicas-to-write",
                str(self.min_replicas),
                "--min-replicas-max-lag",
                str(MAX_LAG),
            )
        self.nodes = [
            RedisServer(
                port,
                self.directory,
                password=self.password,
                extra=(
                    *guard,
                    *(() if i == 0 else ("--replicaof", "127.0.0.1", str(ports[0]))),
                ),
            )
            for i, port in enumerate(ports)
        ]
        self.sentinel_ports = [free_port() for _ in range(3)]

    @property
    def names(self) -> list[str]:
        """The stack's service names: data nodes, then sentinels."""
        data = ["broker-primary"] + [f"broker-replica-{i}" for i in range(1, self.replicas + 1)]
        return data + [f"sentinel-{i}" for i in range(1, 4)]

    def url(self) -> str:
        """kombu's Sentinel URL: every sentinel, each with the primary's password."""
        return ";".join(f"sentinel://:{self.password}@127.0.0.1:{p}/0" for p in self.sentinel_ports)

    def sentinel_argv(self, port: int) -> list[str]:
        conf = self.directory / f"sentinel-{port}.conf"  # sentinel rewrites it: its own
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {self.directory}",
                    f"sentinel monitor {MASTER} 127.0.0.1 {self.nodes[0].port} 2",
                    f"sentinel auth-pass {MASTER} {self.password}",
                    f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
                    f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {MASTER} 1",
                ]
            )
            + "\n"
        )
        return [binary("redis-server", "apt-get install -y redis-server"), str(conf), "--sentinel"]

    def procs(self, env: dict[str, str]) -> dict[str, Proc]:
        argvs = [n.argv() for n in self.nodes] + [
            self.sentinel_argv(p) for p in self.sentinel_ports
        ]
        return {
            name: Proc(name, argv, env, self.directory / f"{name}.out")
            for name, argv in zip(self.names, argvs, strict=True)
        }

    def boot(self, procs: dict[str, Proc], timeout: float = 60) -> None:
        """The data nodes, until they answer and the replicas are in sync; then the
        sentinels, until each knows the primary and its replicas."""
        data = list(zip(self.names, self.nodes, strict=False))
        for name, _ in data:
            procs[name].start()
        for name, node in data:
            node.wait_ready(procs[name], timeout)
        primary = self.client(self.nodes[0].port)
        try:
            wait_until(self._in_sync(primary), timeout, "the replicas to sync", 0.1)
        finally:
            primary.close()
        for name in self.names[len(self.nodes) :]:
            procs[name].start()
        for port, name in zip(self.sentinel_ports, self.names[len(self.nodes) :], strict=True):
            procs[name].wait_for(
                functools.partial(self._sentinel_knows, port), timeout, f"{name} to see the group"
            )

    def _in_sync(self, primary: redis.Redis) -> Any:
        """Whether every replica is connected (and, with min-replicas, counted as good:
        the primary takes writes)."""

        def check() -> bool:
            info: Any = primary.info("replication")
            good = info.get("min_slaves_good_slaves", self.replicas)
            return bool(info.get("connected_slaves", 0) >= self.replicas and good >= self.replicas)

        return check

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            port=port, password=self.password, socket_timeout=1, decode_responses=True
        )

    def _sentinel_knows(self, port: int) -> bool:
        s = redis.Redis(port=port, socket_timeout=0.5, decode_responses=True)
        try:
            master: Any = s.sentinel_master(MASTER)
            return (
                int(master.get("num-slaves", 0)) >= self.replicas
                and int(master.get("num-other-sentinels", 0)) >= 2
            )
        except redis.RedisError:
            return False
        finally:
            s.close()

    def primary_port(self) -> int | None:
        """Where the sentinels say the primary is now (the first that answers)."""
        for port in self.sentinel_ports:
            s = redis.Redis(port=port, socket_timeout=0.5, decode_responses=True)
            try:
                found: Any = s.sentinel_get_master_addr_by_name(MASTER)
                if found:
                    return int(found[1])
            except redis.RedisError:
                continue
            finally:
                s.close()
        return None

    def service_at(self, port: int) -> str | None:
        for name, node in zip(self.names, self.nodes, strict=False):
            if node.port == port:
                return name
        return None


@dataclass
class RabbitCluster:
    """Three rabbitmq-server nodes joined into one cluster: one Erlang cookie (in each
    node's HOME, mode 400), one epmd, ``rabbitmqctl join_cluster``. Celery's queue,
    a quorum queue, has a replica on each."""

    directory: Path
    nodes: list[RabbitServer] = field(default_factory=list)
    epmd_port: int = 0
    cookie: str = field(default_factory=lambda: secrets.token_hex(16))

    def __post_init__(self) -> None:
        self.epmd_port = free_port()
        self.nodes = [
            RabbitServer(
                self.directory / f"node-{i}",
                port=free_port(),
                dist_port=free_port(),
                epmd_port=self.epmd_port,
            )
            for i in range(1, 4)
        ]

    @property
    def names(self) -> list[str]:
        return [f"rabbitmq-{i}" for i in range(1, 4)]

    def url(self, vhost: str = "/") -> str:
        """kombu's failover URL: every node (a connection goes to the next that answers)."""
        return ";".join(node.url(vhost) for node in self.nodes)

    def procs(self, env_for: dict[str, str]) -> dict[str, Proc]:
        out = {
            "epmd": Proc(
                "epmd",
                self.nodes[0].epmd_argv(),
                self.nodes[0].process_env(),
                self.directory / "epmd.out",
            )
        }
        for name, node in zip(self.names, self.nodes, strict=True):
            out[name] = Proc(name, node.argv(), node.process_env(), node.directory / "rabbitmq.out")
        return out

    def boot(self, procs: dict[str, Proc], timeout: float = 120) -> None:
        for node in self.nodes:
            node.prepare()
            cookie = node.directory / "home" / ".erlang.cookie"
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        procs["epmd"].start()
        for name in self.names:
            procs[name].start()
        for name, node in zip(self.names, self.nodes, strict=True):
            node.wait_ready(procs[name], timeout)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
        for name, node in zip(self.names, self.nodes, strict=True):
            node.wait_ready(procs[name], timeout)

    def leader_of(self, queue: str, vhost: str = "/") -> str | None:
        """The node that leads ``queue`` now (a quorum queue), as a node that is up says."""
        for node in self.nodes:
            try:
                # rabbitmqctl boots an Erlang VM of its own: seconds of CPU, and many
                # more on a machine the other tests keep busy (a CI run saw three
                # calls in a row outlast 20 s).
                out = node.ctl("list_queues", "-p", vhost, "name", "leader", "-q", timeout=45)
            except Exception as exc:  # that node is down (or slow): ask the next
                logger.info("list_queues on %s: %s", node.node, exc)
                continue
            for line in out.splitlines():
                name, _, leader = line.partition("\t")
                if name == queue and leader:
                    return leader.strip()
        return None

    def service_of_node(self, node_name: str) -> str | None:
        for name, node in zip(self.names, self.nodes, strict=True):
            if node.node == node_name:
                return name
        return None
