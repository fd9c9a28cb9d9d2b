"""The broker a local stack publishes to, beside the ledger's Redis.

One of: that same Redis (``redis``); a RabbitMQ, either one of the stack's own (the
"rabbitmq" service, which a test can kill) or a virtual host on a shared server (a
test module starts one server, not one per test); or a broker's own answer to a
lost machine, a Sentinel group or a RabbitMQ cluster (``harness.ha``), booted
whole under one service name. ``LocalStack`` starts and stops its processes like
any other; this says which they are, where clients reach them and which one leads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.ha import MASTER, RabbitCluster, SentinelGroup
from harness.procs import Proc
from harness.servers import RabbitServer
from shared.services import IMPLEMENTATIONS

KINDS = ("redis", "rabbitmq", "sentinel", "rabbitmq-cluster")
# The kinds that are several processes, started and stopped as one service.
GROUPS = ("sentinel", "rabbitmq-cluster")


@dataclass
class LocalBroker:
    kind: str = "redis"
    # Where the implementations that need the stack's broker publish ("": the Redis).
    url: str = ""
    # Settings it needs besides the URL (Sentinel's master name).
    settings: dict[str, Any] = field(default_factory=dict)
    rabbitmq: RabbitServer | None = None  # the stack's own RabbitMQ
    shared: RabbitServer | None = None  # a shared one, whose virtual host it uses
    sentinel: SentinelGroup | None = None
    cluster: RabbitCluster | None = None

    @classmethod
    def open(
        cls,
        kind: str,
        workdir: Path,
        *,
        vhost: str,
        shared: RabbitServer | None = None,
        consumer_timeout_ms: int | None = None,
        sentinel_replicas: int = 1,
        min_replicas: int = 0,
    ) -> LocalBroker:
        """Lay out (not start) a broker of ``kind`` under ``workdir``."""
        if kind == "redis":
            return cls()
        if kind == "sentinel":
            sentinel = SentinelGroup(
                workdir / "sentinel", replicas=sentinel_replicas, min_replicas=min_replicas
            )
            return cls(kind, sentinel.url(), {"celery_sentinel_master": MASTER}, sentinel=sentinel)
        if kind == "rabbitmq-cluster":
            cluster = RabbitCluster(workdir / "cluster")
            return cls(kind, cluster.url(), cluster=cluster)
        if kind == "rabbitmq":
            if shared is not None:
                return cls(kind, shared.add_vhost(vhost), shared=shared)
            own = RabbitServer.on_free_ports(
                workdir / "rabbitmq", management=True, consumer_timeout_ms=consumer_timeout_ms
            )
            return cls(kind, own.url(), rabbitmq=own)
        raise ValueError(f"unknown broker {kind!r}: {', '.join(KINDS)}")

    @property
    def services(self) -> tuple[str, ...]:
        """The processes it adds to the stack's services (a shared server: none)."""
        if self.sentinel is not None:
            return tuple(self.sentinel.names)
        if self.cluster is not None:
            return tuple(self.cluster.names)
        return ("rabbitmq",) if self.rabbitmq is not None else ()

    @property
    def group(self) -> str | None:
        """The one service name that starts it whole, when it is several processes."""
        return self.kind if self.kind in GROUPS else None

    @property
    def server(self) -> RabbitServer | None:
        """The RabbitMQ server it lives on (its own or the shared one)."""
        return self.rabbitmq or self.shared

    def primary(self) -> str | None:
        """The process that leads now, of a group: Sentinel's primary, or the cluster's
        node that leads the broker implementation's queue (the one a failover kills)."""
        if self.sentinel is not None:
            port = self.sentinel.primary_port()
            return self.sentinel.service_at(port) if port is not None else None
        if self.cluster is not None:
            # The queue of the implementation that uses the stack's broker service.
            # (Celery's: the first declared; a cluster stack runs Celery's scenarios.)
            queue = next(s.queue for s in IMPLEMENTATIONS.values() if "broker" in s.needs)
            leader = self.cluster.leader_of(queue, "/")
            return self.cluster.service_of_node(leader) if leader else None
        return None

    def boot_group(self, service: str, procs: dict[str, Proc]) -> Callable[[], None] | None:
        """Register the group's processes in ``procs`` and say how to boot it whole;
        a no-op if any part of it is up already; None if ``service`` is not its group."""
        if service != self.group:
            return None
        group = self.sentinel or self.cluster
        assert group is not None
        if any((p := procs.get(n)) is not None and p.alive for n in group.names):
            return lambda: None  # up already (or a part of it is: not booted twice)
        if self.sentinel is not None:
            sentinel = self.sentinel
            started = sentinel.procs(dict(os.environ))
            procs.update(started)
            return lambda: sentinel.boot(started)
        assert self.cluster is not None
        cluster = self.cluster
        started = cluster.procs({})
        procs.update(started)
        return lambda: cluster.boot(started)
