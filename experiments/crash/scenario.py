"""What a crash scenario is made of: the run's parameters, a fault, the stack it needs,
how its outcome is read. Pure data, checked without processes. The scenarios themselves
are each implementation's (``ImplementationSpec.scenarios``); ``experiments.crash.scenarios``
collects them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from harness.stacks import NEEDED_SERVICES, SINGLE_NODE, StackSpec
from shared.services import IMPLEMENTATIONS, Implementation, declared, horizon_settings
from shared.settings import Settings, explicit_settings

Action = Literal["kill", "terminate", "partition", "failover"]

# The crash cells of the table across every implementation: the API SIGKILLed, its
# worker SIGKILLed with the project's settings and with its library's defaults, and
# a task longer than the redelivery horizon (when it runs twice).
COLUMNS = ("api-kill", "worker-kill", "worker-kill-stock", "runs-twice")


@dataclass(frozen=True)
class Params:
    """What a run is made of. The defaults finish in about two minutes on 2 cores."""

    tasks: int = 6  # notification requests per scenario (each schedules 2 tasks)
    delay: float = 2.0  # NOTIFICATION_DELAY_SECONDS: how long a notification runs
    # The horizon: a dead worker's task comes back this long after its delivery (each
    # implementation's declared horizon); longer than a task, or it runs twice.
    visibility: float = 5.0
    restore_interval: float = 0.5  # how often the horizon is checked, where a scan does it
    concurrency: int = 2  # worker processes (or slots): only this many notifications run at once
    grace: int = 1  # the short graceful-shutdown timeout of the API scenario that tests it (s)
    margin: float = 3.0  # slack on every settle deadline (a loaded machine is slow)
    loop_window: float = 30.0  # how long a crash loop is watched (crash-loop, crash-loop-bounded)
    heartbeat: float = 4.0  # RabbitMQ's AMQP heartbeat in the partition scenarios
    rate: float = 8.0  # notification requests per second in the failover scenarios
    steady: float = 8.0  # seconds of traffic before the kill, and again after it

    def settings(self) -> Settings:
        """The settings every process of a (local) scenario runs with."""
        return explicit_settings(
            notification_delay_seconds=self.delay,
            notification_fail_first_attempts=0,
            # A dead worker's task comes back a visibility timeout after its delivery,
            # whichever implementation holds it (each one's declared horizon).
            **horizon_settings(self.visibility, self.restore_interval),
            # Beat is not part of any scenario; keep its heartbeats out of the way.
            beat_interval_seconds=3600,
        )

    def problems(self) -> list[str]:
        """Combinations that would make a scenario measure something else."""
        out = []
        if self.tasks < 1:
            out.append("--tasks must be at least 1")
        if self.loop_window <= 0:
            out.append("--loop-window must be positive")
        if self.concurrency < 1:
            out.append("--concurrency must be at least 1")
        if self.delay <= self.grace:
            out.append(
                f"--delay ({self.delay:g}s) must be longer than --grace ({self.grace}s), "
                "or the short shutdown timeout never cuts a task short"
            )
        if self.visibility <= self.delay + 1:
            out.append(
                f"--visibility-timeout ({self.visibility:g}s) must exceed --delay "
                f"({self.delay:g}s) by a second or more, or every notification runs twice "
                "even without a crash (that is slow-task, on purpose)"
            )
        return out


@dataclass(frozen=True)
class Fault:
    """What is done to the stack once the notifications run."""

    action: Action | None = None  # None: nothing (the scenario is the settings)
    service: str | None = None  # the service hit ("broker": the stack's broker)
    # Start the service again afterwards (two workers: the survivor is the point).
    restart: bool = True
    # terminate: how long the stop may take (for compose, `docker compose stop -t`).
    stop_timeout: Callable[[Params], float] = lambda p: 30.0
    # Broker kills: the question is whether *queued* tasks survive, not the last
    # second of writes, so the kill waits until the broker has them on disk.
    wait_for_fsync: bool = False
    # Kill whichever worker runs the first notification (several workers).
    kill_its_worker: bool = False
    # Kill only the process that runs the first notification (its runner, as its
    # heartbeat names it: a forked child such as RQ's work horse), not its service.
    kill_its_process: bool = False
    # After killing the service's process group, kill the process that ran the first
    # notification too, should it have outlived the group (a child in a process group
    # of its own: RQ's work horse), as the death of a container or a machine would.
    and_its_process: bool = False
    # A partition: how long the service is cut off its broker (the detection horizon
    # per broker: Redis's visibility timeout, RabbitMQ's heartbeat).
    cut: Callable[[Params, str], float] = lambda p, broker: 0.0


NOTHING = Fault()


@dataclass(frozen=True)
class Shape:
    """The stack a scenario needs, beyond its implementation's services."""

    appendonly: bool | None = None  # Redis's AOF: required on, off, or either (None)
    graceful_timeout: Callable[[Params], int | None] = lambda p: None
    # Worker processes (worker, worker-2, ...), each one's concurrency (None: --concurrency).
    workers: int = 1
    concurrency: int | None = None
    # The in-process API's uvicorn processes; with several, kill only the one that
    # holds the first notification (the process, not its supervisor or its siblings).
    bg_workers: int = 1
    # RabbitMQ's consumer_timeout for the run, milliseconds.
    consumer_timeout_ms: Callable[[Params], int | None] = lambda p: None
    # A Sentinel group: its replicas, and how many must have a write (min-replicas).
    sentinel_replicas: int = 1
    min_replicas: int = 0


@dataclass(frozen=True)
class Watch:
    """How the outcome is read."""

    # A fixed window (seconds, from the first submission) instead of waiting for
    # every task to settle: a task that loops for ever never does. What is counted
    # at its end: how often the broker handed each notification out.
    window: Callable[[Params], float | None] = lambda p: None
    # With a window: the verdict that ends the watch instead, once every notification
    # has it and ``margin`` seconds have passed without another delivery (a bounded
    # loop ends by itself, and on a loaded machine later than a fixed window would
    # read it; the deadline is then the window plus 60 s).
    ends_with: str | None = None
    # Seconds of no change in the verdicts before the settle ends (at least the
    # margin): a failover's workers may take a while to consume again.
    quiet: float = 0.0
    # The work runner may exit by itself (a crash loop's bound; a supervisor that goes
    # down with one of its killed processes): wait for that, start it again.
    revive_worker: bool = False


@dataclass(frozen=True)
class Scenario:
    """One row of the crash table: a fault, on one implementation, and what it should do."""

    key: str
    title: str
    implementation: Implementation
    fault: Fault
    expected: str
    # Settings the scenario is about (imposed on any target), from the parameters.
    settings: Callable[[Params], Mapping[str, Any]] = lambda p: {}
    # The brokers it means something on, where its implementation needs one.
    brokers: tuple[str, ...] = SINGLE_NODE
    requests: int | None = None  # notification requests (None: --tasks)
    stack: Shape = Shape()
    watch: Watch = Watch()
    # The cell of the table across every implementation (``experiments.reporting.queues``)
    # this row fills, if any: one of COLUMNS.
    column: str = ""

    @property
    def on_brokers(self) -> bool:
        """It runs once per broker variant: its implementation needs the "broker" service."""
        return "broker" in IMPLEMENTATIONS[self.implementation].needs

    @property
    def label(self) -> str:
        return f"{self.key}: {self.title}"

    def requests_of(self, p: Params) -> int:
        return self.requests or p.tasks

    def spec(self, p: Params, broker: str = "redis") -> StackSpec:
        f, shape = self.fault, self.stack
        return StackSpec(
            NEEDED_SERVICES[self.implementation],
            settings=self.settings(p),
            appendonly=shape.appendonly,
            graceful_timeout=shape.graceful_timeout(p),
            worker_concurrency=shape.concurrency or p.concurrency,
            bg_workers=shape.bg_workers,
            workers=shape.workers,
            broker=broker,
            consumer_timeout_ms=shape.consumer_timeout_ms(p),
            own_broker=f.service == "broker",
            partitioned=(f.service,) if f.action == "partition" and f.service else (),
            sentinel_replicas=shape.sentinel_replicas,
            min_replicas=shape.min_replicas,
        )


def declared_horizon(
    impl: Implementation, scan: float | None = None
) -> Callable[[Params], dict[str, Any]]:
    """A row's settings: ``impl``'s declared horizon (``ImplementationSpec.horizon``),
    a dead worker's task back once it is as old as the visibility timeout (every row
    shares the horizon), found by a scan every ``scan`` seconds (None: the restore
    interval)."""
    reference = IMPLEMENTATIONS[impl].horizon
    assert reference is not None, f"{impl} declares no horizon"

    def settings(p: Params) -> dict[str, Any]:
        # Resolved when a row runs: listing the rows imports no queue library.
        horizon = declared(reference)
        return dict(horizon(p.visibility, p.restore_interval if scan is None else scan))

    return settings


def hang_window(p: Params) -> float:
    """Long enough for Redis to hand a hung task out again a few times (every
    visibility timeout), and for a hard limit of ``delay`` seconds to end it."""
    return 4 * p.visibility + 2 * p.delay


def loop_window(p: Params) -> float:
    """Long enough for a task that kills its process to come back many times."""
    return p.loop_window


def graceful_stop_timeout(p: Params) -> float:
    """A graceful stop that must not be cut short: time for the running tasks to
    finish (twice a notification's length), and slack for a loaded machine."""
    return 2 * p.delay + 30
