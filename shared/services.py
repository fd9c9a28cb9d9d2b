"""The one table of what runs: each implementation and each service, written once.

Everything that lists services reads it: the local stacks (``harness.local``),
the compose target (``harness.compose_target``), ``harness.target``, the stacks
(``harness.stacks``), the lab, the soak and the verdict. A unit test checks
``Procfile`` and ``docker-compose.yml`` against it. Pure data: no process, no I/O
(a declared "module:function" is imported only when read).

An implementation says how its tasks are delivered, and that is what decides
what becomes of them when a process dies (``shared.verdict``):

- *held in process memory*: the API process that accepted a task runs it; the
  task lives only there and dies with it (BackgroundTasks);
- *the broker redelivers*: the task waits in a broker until a worker acknowledges
  it; a worker that dies mid-task leaves it to be handed out again (Celery with
  ``acks_late``).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Implementation(StrEnum):
    bg = "bg"
    celery = "celery"
    taskiq = "taskiq"
    dramatiq = "dramatiq"
    rq = "rq"  # RQ: its block below, after taskiq's


class Delivery(StrEnum):
    in_process = "held in process memory"
    broker = "the broker redelivers"


class Probe(StrEnum):
    """How to tell that a service is ready."""

    http = "http"  # GET ``Service.ready`` answers 200
    output = "output"  # its output shows the pattern ``Service.ready``
    redis = "redis"  # a redis-server answers PING
    amqp = "amqp"  # a rabbitmq-server accepts a connection
    running = "running"  # its process (container) runs


@dataclass(frozen=True)
class ImplementationSpec:
    """One implementation: its API, what runs its work, how its tasks are delivered."""

    implementation: Implementation
    title: str
    package: str  # its own package: ``<package>.main`` holds its app's ``create_app``
    api: str  # the service that answers its HTTP requests
    runs_the_work: str  # the service whose processes run its tasks
    delivery: Delivery
    # The services it needs to take tasks and run them, beside the ledger's Redis
    # ("broker": its broker, Redis or RabbitMQ as the stack says).
    needs: tuple[str, ...]
    # What it can do, which the conformance suite selects its tests by:
    # the service that sends its periodic task (None: it has no schedule);
    periodic: str | None = None
    # a request's tasks run one after the other, in the order scheduled;
    in_order: bool = False
    # a transient failure is retried, a bounded number of times.
    retries: bool = False
    # When a task whose worker died comes back: "module:function" of the settings, a
    # ``shared.redelivery.Redelivery``; None: nothing redelivers (held in process memory).
    redelivery: str | None = None
    # Where its tasks wait in the broker (the queue, stream or list), "" for none.
    queue: str = ""
    # Its colour in every chart ("": the palette's next free one).
    color: str = ""
    # The settings that bring a dead worker's task back within a horizon:
    # "module:function" of (seconds, scan every) -> settings; None: nothing comes back.
    horizon: str | None = None
    # The settings that run it as its library ships, where this project departs from
    # that (the experiments' "stock" rows): "module:function" () -> settings.
    stock: str | None = None
    # The command that drops the messages waiting in its broker, run where its work
    # runs (between measurements); empty: nothing waits anywhere but in a process.
    purge: tuple[str, ...] = ()
    # Its worker's log line for each message it is handed (group 1: the task id), which
    # counts deliveries that never started a run; empty: count the ledger's runs.
    received: str = ""
    # Its library's distributions, whose versions every report records.
    libraries: tuple[str, ...] = ()
    # Its rows of the crash table: "module:attribute" of a tuple of
    # ``experiments.crash.scenarios.Scenario`` (its package's, beside its app).
    scenarios: str | None = None
    # Its lines in the README's decision guide: "module:function" (the reports'
    # directory) -> lines; None: it is not in the guide (the five-way table has it).
    guide: str | None = None
    # What it says of itself in the table across every implementation, each claim with
    # a link to the test that shows it: "module:function" () -> {column: markdown}
    # (``experiments.reporting.queues.CLAIMS``, and "runs twice").
    cells: str | None = None


@dataclass(frozen=True)
class Service:
    name: str
    # The implementation it belongs to; None: every one (Redis holds every ledger).
    implementation: Implementation | None
    # The command, as compose and the Procfile run it, with the options every way of
    # running it passes (each adds its own: host, port, files).
    command: tuple[str, ...]
    # Where it listens (in its container), and the variable that publishes it on the host.
    port: int | None
    port_variable: str | None
    probe: Probe
    ready: str = ""  # the probe's path or output pattern
    runs_work: bool = False
    # A Python service of this project (one image for all), or a server it uses.
    python: bool = True
    # Only for the stacks that run it (a broker, a UI).
    optional: bool = False
    # What the lab may do to it.
    controls: frozenset[str] = frozenset()
    # The local stacks' own options: ``str.format`` fields from ``harness.local``
    # (port, name, stack, workdir, concurrency).
    local: tuple[str, ...] = ()


PROCESS_CONTROLS = frozenset({"kill", "stop", "restart"})
UVICORN_LOCAL = ("--host", "127.0.0.1", "--port", "{port}", "--no-access-log")

IMPLEMENTATIONS: dict[Implementation, ImplementationSpec] = {
    Implementation.bg: ImplementationSpec(
        Implementation.bg,
        "BackgroundTasks",
        package="fastapi_bg",
        color="#1f77b4",
        api="bg-api",
        runs_the_work="bg-api",
        delivery=Delivery.in_process,
        needs=("bg-api",),
        in_order=True,
        libraries=("fastapi", "starlette"),
        scenarios="fastapi_bg.crash_scenarios:SCENARIOS",
        guide="fastapi_bg.guide:lines",
        cells="fastapi_bg.guide:cells",
    ),
    Implementation.celery: ImplementationSpec(
        Implementation.celery,
        "Celery",
        package="celery_app",
        queue="celery",
        color="#2ca02c",
        api="celery-api",
        runs_the_work="worker",
        delivery=Delivery.broker,
        needs=("broker", "celery-api", "worker"),
        periodic="beat",
        retries=True,
        redelivery="shared.verdict:Redelivery.of",
        horizon="celery_app.delivery:horizon",
        stock="celery_app.delivery:stock",
        purge=("celery", "-A", "celery_app.worker", "purge", "-f"),
        received=r"Task \S+\[([0-9a-f-]{36})\] received",
        libraries=("celery", "kombu"),
        scenarios="celery_app.crash_scenarios:SCENARIOS",
        guide="celery_app.guide:lines",
        cells="celery_app.guide:cells",
    ),
    Implementation.taskiq: ImplementationSpec(
        Implementation.taskiq,
        "taskiq",
        package="taskiq_app",
        queue="taskiq",
        api="taskiq-api",
        runs_the_work="taskiq-worker",
        delivery=Delivery.broker,
        # The scheduler too: a retry's delay waits in its schedule source.
        needs=("taskiq-api", "taskiq-worker", "taskiq-scheduler"),
        periodic="taskiq-scheduler",
        retries=True,
        redelivery="taskiq_app.delivery:redelivery",
        horizon="taskiq_app.delivery:horizon",
        stock="taskiq_app.delivery:stock",
        purge=("python", "-m", "taskiq_app.purge"),
        libraries=("taskiq", "taskiq-redis"),
        scenarios="taskiq_app.crash_scenarios:SCENARIOS",
        cells="taskiq_app.guide:cells",
    ),
    Implementation.dramatiq: ImplementationSpec(
        Implementation.dramatiq,
        "dramatiq",
        package="dramatiq_app",
        queue="default",
        api="dramatiq-api",
        runs_the_work="dramatiq-worker",
        delivery=Delivery.broker,
        # Redis or RabbitMQ, as the stack's broker is (DRAMATIQ_BROKER_URL).
        needs=("broker", "dramatiq-api", "dramatiq-worker"),
        periodic="dramatiq-scheduler",
        retries=True,
        redelivery="dramatiq_app.delivery:redelivery",
        horizon="dramatiq_app.delivery:horizon",
        stock="dramatiq_app.delivery:stock",
        purge=("python", "-m", "dramatiq_app.purge"),
        libraries=("dramatiq", "apscheduler"),
        scenarios="dramatiq_app.crash_scenarios:SCENARIOS",
        cells="dramatiq_app.guide:cells",
    ),
    # --- RQ ---
    Implementation.rq: ImplementationSpec(
        Implementation.rq,
        "RQ",
        package="rq_app",
        queue="rq",
        api="rq-api",
        runs_the_work="rq-worker",
        # RQ never hands a started job out again: a dead worker's job is failed
        # (abandoned, in its FailedJobRegistry) or retried by the registry cleanup of
        # another worker; its rule is when that happens (rq_app.delivery).
        delivery=Delivery.broker,
        # Redis only (RQ_BROKER_URL, else REDIS_URL): never the stack's RabbitMQ.
        needs=("rq-api", "rq-worker"),
        # The worker's scheduler enqueues the periodic job (rq_app.beat).
        periodic="rq-worker",
        # One worker runs one job at a time: a request's two jobs, in order.
        in_order=True,
        retries=True,
        redelivery="rq_app.delivery:redelivery",
        horizon="rq_app.delivery:horizon",
        stock="rq_app.delivery:stock",
        purge=("python", "-m", "rq_app.purge"),
        libraries=("rq",),
        scenarios="rq_app.crash_scenarios:SCENARIOS",
        cells="rq_app.guide:cells",
    ),
}

# The chapter's two: what the default stack, the lab and the soak run unless told
# otherwise (each further implementation is selected by name).
DEFAULT_IMPLEMENTATIONS: tuple[Implementation, ...] = (Implementation.bg, Implementation.celery)

SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            "redis",
            None,
            ("redis-server",),
            port=None,
            port_variable=None,
            probe=Probe.redis,
            python=False,
            controls=frozenset({"restart"}),
        ),
        Service(
            "bg-api",
            Implementation.bg,
            ("uvicorn", "fastapi_bg.main:app"),
            port=8001,
            port_variable="BG_API_PORT",
            probe=Probe.http,
            ready="/health",
            runs_work=True,
            controls=PROCESS_CONTROLS,
            local=UVICORN_LOCAL,
        ),
        Service(
            "celery-api",
            Implementation.celery,
            ("uvicorn", "celery_app.main:app"),
            port=8002,
            port_variable="CELERY_API_PORT",
            probe=Probe.http,
            ready="/health",
            controls=PROCESS_CONTROLS,
            local=UVICORN_LOCAL,
        ),
        Service(
            "worker",
            Implementation.celery,
            (
                "celery",
                "-A",
                "celery_app.worker",
                "worker",
                "-E",
                "--without-mingle",
                "--without-gossip",
            ),
            port=None,
            port_variable=None,
            probe=Probe.output,
            ready=r"ready\.",
            runs_work=True,
            controls=PROCESS_CONTROLS,
            local=(
                "--pool",
                "prefork",
                "--concurrency",
                "{concurrency}",
                "--hostname",
                "{name}-{stack}@%h",
            ),
        ),
        Service(
            "beat",
            Implementation.celery,
            ("celery", "-A", "celery_app.worker", "beat"),
            port=None,
            port_variable=None,
            probe=Probe.output,
            ready="beat: Starting",
            local=("--schedule", "{workdir}/celerybeat-schedule"),
        ),
        Service(
            "flower",
            Implementation.celery,
            ("celery", "-A", "celery_app.worker", "flower"),
            port=5555,
            port_variable="FLOWER_PORT",
            probe=Probe.http,
            ready="/healthcheck",
            optional=True,
            local=("--address=127.0.0.1", "--port={port}"),
        ),
        Service(
            "taskiq-api",
            Implementation.taskiq,
            ("uvicorn", "taskiq_app.main:app"),
            port=8003,
            port_variable="TASKIQ_API_PORT",
            probe=Probe.http,
            ready="/health",
            optional=True,
            controls=PROCESS_CONTROLS,
            local=UVICORN_LOCAL,
        ),
        Service(
            "taskiq-worker",
            Implementation.taskiq,
            # A worker process that dies is started again, the third time not: the
            # command exits (a refused setting kills each one as it imports; without
            # a bound, taskiq would start them for ever).
            (
                "taskiq",
                "worker",
                "taskiq_app.worker:broker",
                "taskiq_app.tasks",
                "--max-fails",
                "3",
            ),
            port=None,
            port_variable=None,
            probe=Probe.output,
            ready=r"taskiq worker process \S+ ready",
            runs_work=True,
            optional=True,
            controls=PROCESS_CONTROLS,
            local=(
                "--no-configure-logging",
                "--workers",
                "1",
                "--max-async-tasks",
                "{concurrency}",
                "--max-threadpool-threads",
                "{concurrency}",
            ),
        ),
        Service(
            "taskiq-scheduler",
            Implementation.taskiq,
            # Its sources read every second, not every minute: a retry's delay waits in one.
            (
                "taskiq",
                "scheduler",
                "taskiq_app.worker:scheduler",
                "taskiq_app.tasks",
                "--update-interval",
                "1",
            ),
            port=None,
            port_variable=None,
            probe=Probe.running,
            optional=True,
            local=("--no-configure-logging",),
        ),
        Service(
            "dramatiq-api",
            Implementation.dramatiq,
            ("uvicorn", "dramatiq_app.main:app"),
            port=8004,
            port_variable="DRAMATIQ_API_PORT",
            probe=Probe.http,
            ready="/health",
            optional=True,
            controls=PROCESS_CONTROLS,
            local=UVICORN_LOCAL,
        ),
        Service(
            "dramatiq-worker",
            Implementation.dramatiq,
            # dramatiq's own logging setup off: each worker process sets up the project's.
            # One of its processes dying stops the whole command (dramatiq's CLI).
            ("dramatiq", "dramatiq_app.tasks", "--skip-logging"),
            port=None,
            port_variable=None,
            probe=Probe.output,
            ready=r"dramatiq worker process \S+ ready",
            runs_work=True,
            optional=True,
            controls=PROCESS_CONTROLS,
            local=("--processes", "1", "--threads", "{concurrency}"),
        ),
        Service(
            "dramatiq-scheduler",
            Implementation.dramatiq,
            # APScheduler sending the periodic actor; exactly one.
            ("python", "-m", "dramatiq_app.scheduler"),
            port=None,
            port_variable=None,
            probe=Probe.output,
            ready="dramatiq scheduler started",
            optional=True,
        ),
        # --- RQ ---
        Service(
            "rq-api",
            Implementation.rq,
            ("uvicorn", "rq_app.main:app"),
            port=8005,
            port_variable="RQ_API_PORT",
            probe=Probe.http,
            ready="/health",
            optional=True,
            controls=PROCESS_CONTROLS,
            local=UVICORN_LOCAL,
        ),
        Service(
            "rq-worker",
            Implementation.rq,
            # `rq worker` (python -m rq.cli: the rq package has no __main__), with its
            # scheduler (retries' delays, the periodic job), JSON jobs, and the
            # project's Worker (its intervals from the settings, its records).
            (
                "python",
                "-m",
                "rq.cli",
                "worker",
                "--with-scheduler",
                "--config",
                "rq_app.cli_config",
                "--worker-class",
                "rq_app.worker.RecordingWorker",
                "--serializer",
                "json",
            ),
            port=None,
            port_variable=None,
            probe=Probe.output,
            ready=r"rq worker \S+ ready",
            runs_work=True,
            optional=True,
            controls=PROCESS_CONTROLS,
        ),
        Service(
            "rq-dashboard",
            Implementation.rq,
            # rq-dashboard (Flask), JSON jobs; its Redis and the refusal to run without
            # a user and password (RQ_DASHBOARD_USERNAME / _PASSWORD) in its config.
            ("python", "-m", "rq_dashboard", "--json", "--config", "rq_app.dashboard_config"),
            port=9181,
            port_variable="RQ_DASHBOARD_PORT",
            # Every page asks for the password: running is all a probe can see.
            probe=Probe.running,
            optional=True,
            local=("--bind", "127.0.0.1", "--port", "{port}"),
        ),
        Service(
            "rabbitmq",
            Implementation.celery,
            ("rabbitmq-server",),
            # Its management UI (AMQP itself is never published).
            port=15672,
            port_variable="RABBITMQ_UI_PORT",
            probe=Probe.amqp,
            python=False,
            optional=True,
            controls=frozenset({"restart"}),
        ),
    )
}


def service(name: str) -> Service:
    """A service's record; a numbered copy ("worker-2") has its original's."""
    found = SERVICES.get(name) or SERVICES.get(name.rsplit("-", 1)[0])
    if found is None:
        raise KeyError(f"unknown service {name!r}: {', '.join(SERVICES)}")
    return found


def implementation_of(name: str) -> Implementation:
    """The implementation a service belongs to (Redis, which every one uses:
    Celery's, whose broker it can be)."""
    return service(name).implementation or Implementation.celery


def declared(reference: str) -> Any:
    """The object a declaration names as "module:attribute.path" (imported now)."""
    module, _, name = reference.partition(":")
    return functools.reduce(getattr, name.split("."), importlib.import_module(module))


def horizon_settings(seconds: float, scan: float) -> dict[str, Any]:
    """The settings that bring every implementation's dead-worker task back within
    ``seconds`` of its delivery, found by a scan every ``scan`` seconds."""
    found: dict[str, Any] = {}
    for spec in IMPLEMENTATIONS.values():
        if spec.horizon is not None:
            found.update(declared(spec.horizon)(seconds, scan))
    return found


def stock_settings(impl: Implementation | str) -> dict[str, Any]:
    """The settings that run ``impl`` as its library ships ({}: nothing departs)."""
    spec = IMPLEMENTATIONS[Implementation(impl)]
    return dict(declared(spec.stock)()) if spec.stock is not None else {}


def api_of(impl: Implementation | str) -> str:
    return IMPLEMENTATIONS[Implementation(impl)].api


def delivery_of(impl: Implementation | str) -> Delivery:
    return IMPLEMENTATIONS[Implementation(impl)].delivery


def services_of(impl: Implementation | str) -> tuple[str, ...]:
    """An implementation's services, in the table's order."""
    wanted = Implementation(impl)
    return tuple(name for name, s in SERVICES.items() if s.implementation == wanted)


PYTHON_SERVICES = tuple(name for name, s in SERVICES.items() if s.python)
# The APIs that run their tasks themselves (several uvicorn processes: each holds its own).
IN_PROCESS_APIS = tuple(
    spec.api for spec in IMPLEMENTATIONS.values() if spec.delivery == Delivery.in_process
)
# What the default implementations run, beside Redis and a broker: their needs and
# their schedulers, in the table's order.
DEFAULT_STACK = tuple(
    name
    for name in SERVICES
    if any(
        name in (*spec.needs, spec.periodic)
        for impl, spec in IMPLEMENTATIONS.items()
        if impl in DEFAULT_IMPLEMENTATIONS
    )
)
# The Python services every stack runs (the optional ones only where asked for).
CORE_SERVICES = tuple(name for name, s in SERVICES.items() if not s.optional)
