"""Opening a stack for one measurement, on whichever target the user chose.

``open_stack(where, spec)`` is the one way an experiment gets a running stack:
a fresh ``LocalStack`` in a temp dir (started, and always stopped), or the
running compose project with the spec's settings imposed on the services that
need them (and put back afterwards). What a target cannot do (Redis without
persistence on a stack that has it, say) raises ``Unsupported``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from harness.compose_target import LINK, PARTITIONED, ComposeTarget
from harness.local import LocalStack
from harness.servers import RabbitServer
from harness.target import Target, Unsupported
from shared.models import Implementation
from shared.services import IMPLEMENTATIONS, PYTHON_SERVICES, Delivery, delivery_of
from shared.settings import Settings

logger = logging.getLogger(__name__)

# The Celery side's brokers a stack can run.
BROKERS = ("redis", "rabbitmq")
# A broker as a spec names it (StackSpec.broker): the server, and what the name
# implies of Celery's queue on it. "rabbitmq": a quorum queue, the default.
BROKER_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "redis": ("redis", {}),
    "rabbitmq": ("rabbitmq", {"celery_queue_type": "quorum"}),
    "rabbitmq-classic": ("rabbitmq", {"celery_queue_type": "classic"}),
    # When the broker's machine is lost: a Sentinel group, a three-node cluster.
    "sentinel": ("sentinel", {}),
    "rabbitmq-cluster": ("rabbitmq-cluster", {"celery_queue_type": "quorum"}),
}
# The brokers every scenario runs on unless it says otherwise (one node each).
SINGLE_NODE = ("redis", "rabbitmq", "rabbitmq-classic")


def variant_of(settings: Settings) -> str:
    """The broker variant a stack running with ``settings`` is."""
    if settings.broker_url.lower().startswith("sentinel://"):
        return "sentinel"
    if settings.broker == "redis":
        return "redis"
    if ";" in settings.broker_url:
        return "rabbitmq-cluster"
    return "rabbitmq" if settings.celery_queue_type == "quorum" else "rabbitmq-classic"


# What each implementation needs to take tasks and run them. Redis: the ledger;
# "broker": its broker, Redis or RabbitMQ as the spec says (Redis starts only once).
NEEDED_SERVICES: dict[Implementation, tuple[str, ...]] = {
    impl: ("redis", *spec.needs) for impl, spec in IMPLEMENTATIONS.items()
}


@dataclass(frozen=True)
class Where:
    """Which target, and how to reach it."""

    kind: Literal["local", "compose"] = "local"
    # local: where each stack's directory goes (default: the system's temp dir),
    # and whether to keep it afterwards (it is kept anyway when the run failed).
    workdir: Path | None = None
    keep: bool = False
    # compose: the project (-p), its files (-f), and the APIs' URLs if not published.
    project: str | None = None
    files: tuple[str, ...] = ()
    urls: Mapping[str, str] = field(default_factory=dict)  # service -> URL
    # local: a running RabbitMQ to share (a virtual host per stack) rather than
    # one started per stack, for the specs that do not need their own.
    rabbitmq: RabbitServer | None = None

    def attach(self) -> ComposeTarget:
        return ComposeTarget.attach(project=self.project, files=self.files, urls=self.urls)


@dataclass(frozen=True)
class StackSpec:
    """What a measurement needs running, and with which settings."""

    services: tuple[str, ...]
    # Imposed on any target: the measurement is about them (stock acks, say).
    settings: Mapping[str, Any] = field(default_factory=dict)
    # Redis's append-only file: required on (True), required off (False), or
    # whatever the target has (None; local stacks run without it).
    appendonly: bool | None = None
    # uvicorn's --timeout-graceful-shutdown (local; compose has `stop -t`).
    graceful_timeout: int | None = None
    worker_concurrency: int = 2
    bg_workers: int = 1
    # uvicorn processes of each API.
    api_processes: int = 1
    # Celery worker processes (services worker, worker-2, ...), and the broker.
    workers: int = 1
    broker: str = "redis"
    # RabbitMQ's consumer_timeout, milliseconds (None: RabbitMQ's 30 minutes).
    consumer_timeout_ms: int | None = None
    # A broker of its own, even where a shared one is offered (it is killed, say).
    own_broker: bool = False
    # Services that reach the broker through a proxy that can freeze (a partition).
    partitioned: tuple[str, ...] = ()
    # A Sentinel group's replicas, and how many must take a write (min-replicas).
    sentinel_replicas: int = 1
    min_replicas: int = 0

    @classmethod
    def for_implementation(
        cls,
        impl: str,
        *,
        processes: int | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> StackSpec:
        """One implementation's services (``NEEDED_SERVICES``). ``processes``: what runs
        its tasks: the API's uvicorn workers where tasks are held in process memory,
        else the worker's concurrency (None: the defaults)."""
        if impl not in NEEDED_SERVICES:
            raise ValueError(f"unknown implementation {impl!r}: {', '.join(NEEDED_SERVICES)}")
        spec = cls(NEEDED_SERVICES[Implementation(impl)], settings=settings or {})
        if processes is None:
            return spec
        if delivery_of(impl) == Delivery.in_process:
            return replace(spec, bg_workers=processes)
        return replace(spec, worker_concurrency=processes)


@contextlib.contextmanager
def open_stack(
    where: Where, spec: StackSpec, *, base: Settings | None = None, label: str = "stack"
) -> Iterator[Target]:
    """A running stack for ``spec``. ``base``: a local stack's settings before the
    spec's (a compose stack keeps its own, but for the spec's)."""
    if where.kind == "compose":
        with _compose(where, spec) as target:
            yield target
        return
    if where.workdir is not None:
        where.workdir.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=where.workdir))
    server, implied = BROKER_VARIANTS[spec.broker]
    stack = LocalStack(
        path,
        base,
        appendonly=bool(spec.appendonly),
        worker_concurrency=spec.worker_concurrency,
        graceful_timeout=spec.graceful_timeout,
        bg_workers=spec.bg_workers,
        api_processes=spec.api_processes,
        workers=spec.workers,
        broker=server,
        rabbitmq=None if spec.own_broker or spec.consumer_timeout_ms else where.rabbitmq,
        consumer_timeout_ms=spec.consumer_timeout_ms,
        partitioned=spec.partitioned,
        sentinel_replicas=spec.sentinel_replicas,
        min_replicas=spec.min_replicas,
        **{**implied, **spec.settings},
    )
    failed = False
    try:
        services: list[str] = []
        for service in spec.services:
            services.append(service if service != "broker" else stack.broker_service)
            if service == "worker":  # and the other workers, when there are several
                services += [f"worker-{i}" for i in range(2, spec.workers + 1)]
        stack.start_many(list(dict.fromkeys(services)))
        yield stack
    except BaseException:
        failed = True
        # What the processes printed is the only clue to a failed run.
        logger.error("%s failed; process output (kept in %s):\n%s", label, path, stack.outputs())
        raise
    finally:
        stack.close()
        if not (where.keep or failed):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _compose(where: Where, spec: StackSpec) -> Iterator[Target]:
    target = where.attach()
    if spec.appendonly is not None and spec.appendonly != target.appendonly:
        raise Unsupported(
            "needs Redis "
            + ("with" if spec.appendonly else "without")
            + " the append-only file; the compose stack's Redis is configured otherwise"
        )
    if spec.bg_workers > 1 or spec.api_processes > 1:
        raise Unsupported("needs APIs with several uvicorn workers; the compose stack runs one")
    if spec.broker != variant_of(target.settings):
        raise Unsupported(
            f"needs Celery on {spec.broker}; the compose stack's broker is "
            f"{variant_of(target.settings)} (run the {spec.broker} stack for it)"
        )
    if spec.consumer_timeout_ms is not None:
        raise Unsupported("needs RabbitMQ with a short consumer_timeout: local target only")
    if spec.partitioned and (
        set(spec.partitioned) != {PARTITIONED}
        or LINK not in target.services
        or variant_of(target.settings) != "redis"  # broker-link forwards to Redis only
    ):
        raise Unsupported(
            f"a partition on compose: {PARTITIONED} through {LINK} only "
            "(-f docker-compose.yml -f docker-compose.partition.yml)"
        )
    if spec.broker in ("sentinel", "rabbitmq-cluster"):
        raise Unsupported(
            "a failover scenario: local target only (scripts/compose-smoke.sh runs the "
            "Sentinel failover on docker-compose.ha.yml)"
        )
    # Worker containers: the worker service's, and worker-2 (docker-compose.partition.yml).
    running = [r for r in target.compose.ps() if r.get("Service") in ("worker", PARTITIONED)]
    if spec.workers > len(running):
        raise Unsupported(
            f"needs {spec.workers} workers; the compose stack runs {len(running)} "
            f"(docker compose up --scale worker={spec.workers})"
        )
    for service in spec.services:
        target.start(service if service != "broker" else target.broker_service)
    changed: dict[str, Settings] = {}
    try:
        for service in (s for s in spec.services if s in PYTHON_SERVICES):
            current = target.settings_for(service)
            if current.replace(**spec.settings) != current:
                logger.info("recreating %s with %s", service, dict(spec.settings))
                changed[service] = current
                target.reconfigure(service, **spec.settings)
        yield target
    finally:
        for service, before in changed.items():
            # As it was: the stack belongs to the user.
            target.reconfigure(service, **before.model_dump())
