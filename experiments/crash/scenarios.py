"""The crash scenarios and their parameters: pure data, checked without processes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.stacks import NEEDED_SERVICES, SINGLE_NODE, StackSpec
from shared.services import IMPLEMENTATIONS, Implementation, declared
from shared.settings import Settings, explicit_settings

Action = Literal["kill", "terminate", "partition", "failover"]


@dataclass(frozen=True)
class Params:
    """What a run is made of. The defaults finish in about two minutes on 2 cores."""

    tasks: int = 6  # notification requests per scenario (each schedules 2 tasks)
    delay: float = 2.0  # NOTIFICATION_DELAY_SECONDS: how long a notification runs
    visibility: float = 5.0  # CELERY_VISIBILITY_TIMEOUT: longer than a task, or it runs twice
    restore_interval: float = 0.5  # CELERY_RESTORE_INTERVAL: kombu's scan for expired unacked
    concurrency: int = 2  # Celery worker processes: only this many notifications run at once
    grace: int = 1  # bg-term-timeout's short graceful-shutdown timeout (whole seconds: uvicorn)
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
            celery_visibility_timeout=self.visibility,
            celery_restore_interval=self.restore_interval,
            celery_acks_late=True,
            celery_prefetch_multiplier=1,
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
                "or bg-term-timeout's shutdown timeout never cuts a task short"
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
    # Nothing is killed, but the worker may exit by itself: wait for that, start it again.
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


def hang_window(p: Params) -> float:
    """Long enough for Redis to hand a hung task out again a few times (every
    visibility timeout), and for a hard limit of ``delay`` seconds to end it."""
    return 4 * p.visibility + 2 * p.delay


def loop_window(p: Params) -> float:
    """Long enough for a task that kills its process to come back many times."""
    return p.loop_window


# The limits and bounds a scenario sets off: the hazard as stock Celery has it.
NO_LIMITS = {"task_soft_time_limit": 0, "task_time_limit": 0}
NO_BOUND = {"celery_max_deliveries": 0, "celery_delivery_limit": 0}
# A bound of 3 deliveries: the project's own on Redis, the broker's on a quorum queue.
BOUND = {"celery_max_deliveries": 3, "celery_delivery_limit": 2}


def graceful_stop_timeout(p: Params) -> float:
    """A graceful stop that must not be cut short: time for the running tasks to
    finish (twice a notification's length), and slack for a loaded machine."""
    return 2 * p.delay + 30


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="bg-kill",
        title="bg-api SIGKILL",
        implementation=Implementation.bg,
        fault=Fault("kill", "bg-api"),
        expected="every task in flight is lost: it lived only in the killed process",
    ),
    Scenario(
        key="bg-kill-one-process",
        title="one of two bg-api processes SIGKILL",
        implementation=Implementation.bg,
        fault=Fault(
            "kill",
            "bg-api",
            restart=False,
        ),
        expected="only the tasks held by the killed process are lost; the other process's "
        "complete (uvicorn starts a new process in its place)",
        stack=Shape(bg_workers=2),
    ),
    Scenario(
        key="bg-term",
        title="bg-api SIGTERM (graceful)",
        implementation=Implementation.bg,
        fault=Fault(
            "terminate",
            "bg-api",
            stop_timeout=graceful_stop_timeout,
        ),
        expected="nothing lost: uvicorn waits for running background tasks before it exits",
    ),
    Scenario(
        key="bg-term-timeout",
        title="bg-api SIGTERM, shutdown timeout < task",
        implementation=Implementation.bg,
        fault=Fault(
            "terminate",
            "bg-api",
            stop_timeout=lambda p: float(p.grace),
        ),
        expected="every task in flight is lost once the shutdown timeout cuts it off",
        stack=Shape(
            # Local: uvicorn's --timeout-graceful-shutdown. Compose: `docker compose
            # stop -t grace`, i.e. SIGKILL after the grace period.
            graceful_timeout=lambda p: p.grace,
        ),
    ),
    Scenario(
        key="celery-api-kill",
        title="celery-api SIGKILL",
        implementation=Implementation.celery,
        fault=Fault("kill", "celery-api"),
        expected="nothing lost: the tasks were already in the broker and the worker runs them",
    ),
    Scenario(
        key="worker-kill",
        title="worker SIGKILL (acks_late)",
        implementation=Implementation.celery,
        fault=Fault("kill", "worker"),
        expected="nothing lost: the unacked tasks come back (Redis: after the visibility "
        "timeout; RabbitMQ: when the worker's connection closes) and run again, writing once",
    ),
    Scenario(
        key="worker-kill-two-workers",
        title="one of two workers SIGKILL (acks_late)",
        implementation=Implementation.celery,
        fault=Fault(
            "kill",
            "worker",
            restart=False,
            kill_its_worker=True,
        ),
        expected="nothing lost: the surviving worker takes the dead one's task (RabbitMQ: at "
        "once; Redis: once the visibility timeout has passed)",
        # One notification: one worker runs it, the other is free to take it over.
        requests=1,
        stack=Shape(workers=2),
    ),
    Scenario(
        key="worker-kill-stock-acks",
        title="worker SIGKILL (stock acks)",
        implementation=Implementation.celery,
        fault=Fault("kill", "worker"),
        expected="the running tasks are lost: stock Celery acks a task as it starts",
        settings=lambda p: {"celery_acks_late": False},
    ),
    Scenario(
        key="worker-term",
        title="worker SIGTERM (warm shutdown)",
        implementation=Implementation.celery,
        fault=Fault(
            "terminate",
            "worker",
            stop_timeout=graceful_stop_timeout,
        ),
        expected="nothing lost: running tasks finish, queued ones wait in the broker for the "
        "restart",
    ),
    Scenario(
        key="broker-restart",
        title="broker SIGKILL + restart (Redis: AOF on)",
        implementation=Implementation.celery,
        fault=Fault(
            "kill",
            "broker",
            wait_for_fsync=True,
        ),
        expected="nothing lost: Redis replays the queue (and the ledger) from its append-only "
        "file; RabbitMQ keeps its durable queue's persistent messages",
        stack=Shape(appendonly=True),
    ),
    Scenario(
        key="redis-restart-no-aof",
        title="redis SIGKILL + restart, no persistence",
        implementation=Implementation.celery,
        fault=Fault(
            "kill",
            "redis",
            wait_for_fsync=True,
        ),
        expected="everything not yet finished is lost, and the ledger forgets it too",
        brokers=("redis",),
        stack=Shape(appendonly=False),
    ),
    Scenario(
        key="slow-task",
        title="no crash, task longer than visibility timeout",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="nothing lost; Redis hands every notification out again while it runs (it "
        "runs twice, idempotency writes it once); RabbitMQ has no such timeout: it runs once",
        settings=lambda p: {"celery_visibility_timeout": p.delay / 2},
    ),
    Scenario(
        key="long-countdown",
        title="no crash, retry countdown longer than visibility timeout",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="nothing lost; Redis gives the retry's unacknowledged message (held until its "
        "ETA) back after the visibility timeout: it runs twice; RabbitMQ: once",
        settings=lambda p: {
            "notification_fail_first_attempts": 1,
            "retry_jitter": False,
            "retry_backoff_seconds": p.visibility * 2,
            "retry_backoff_max_seconds": p.visibility * 2,
        },
        requests=1,
    ),
    Scenario(
        key="consumer-timeout",
        title="no crash, task longer than RabbitMQ's consumer_timeout",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="RabbitMQ closes the channel of a consumer that holds a delivery past "
        "consumer_timeout and requeues it; Celery's worker stops on that error, and the task "
        "(its ack refused) runs again on the next worker: twice, writing once",
        brokers=("rabbitmq", "rabbitmq-classic"),
        requests=1,
        stack=Shape(
            # A quarter of the task: RabbitMQ checks it once a second (the harness sets
            # channel_tick_interval to 1 s; its default, 60 s, would hide it).
            consumer_timeout_ms=lambda p: int(p.delay * 1000 / 4),
        ),
        watch=Watch(revive_worker=True),
    ),
)
SCENARIOS += (
    Scenario(
        key="hung-task",
        title="no crash, a task that hangs, no time limits",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="it never ends; Redis hands it out again every visibility timeout while it "
        "hangs, to every free worker process; RabbitMQ hands it out once (until "
        "consumer_timeout)",
        settings=lambda p: {**NO_LIMITS, "notification_hang_first_attempts": 99},
        requests=1,
        watch=Watch(window=hang_window),
    ),
    Scenario(
        key="hung-task-limited",
        title="no crash, a task that hangs, with time limits",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="the hard time limit kills its pool process; the worker records it as failed "
        "and acknowledges it: handed out once, not again",
        settings=lambda p: {
            "notification_hang_first_attempts": 99,
            "task_soft_time_limit": p.delay / 2,
            "task_time_limit": p.delay,
        },
        requests=1,
        watch=Watch(window=hang_window),
    ),
    Scenario(
        key="crash-loop",
        title="a task that kills its process every time, no bound",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="requeued at every death (acks_late, reject_on_worker_lost) and handed out "
        "again at once, for ever: neither lost nor done",
        settings=lambda p: {**NO_BOUND, "notification_crash_first_attempts": 99},
        requests=1,
        watch=Watch(window=loop_window),
    ),
    Scenario(
        key="crash-loop-bounded",
        title="a task that kills its process every time, bounded",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="after 3 deliveries it is not run again: Redis, the worker's own bound "
        "(CELERY_MAX_DELIVERIES) fails it; a quorum queue's delivery limit dead-letters it, "
        "and the worker records it: gave up",
        settings=lambda p: {**BOUND, "notification_crash_first_attempts": 99},
        requests=1,
        watch=Watch(
            window=loop_window,
            ends_with="gave up",
        ),
    ),
)


def horizon(p: Params, broker: str) -> float:
    """How long a silent worker goes unnoticed: Redis's visibility timeout (its unacked
    task is then handed out again); RabbitMQ's heartbeat (the connection is then dead)."""
    return p.visibility if broker == "redis" else p.heartbeat


SCENARIOS += (
    Scenario(
        key="partition-short",
        title="one of two workers cut off its broker, shorter than the horizon",
        implementation=Implementation.celery,
        fault=Fault(
            "partition",
            "worker-2",
            cut=lambda p, broker: horizon(p, broker) / 2,
        ),
        expected="nothing lost; the broker hands nothing out again for a cut shorter than "
        "the visibility timeout (Redis) or the heartbeat (RabbitMQ): the cut worker's tasks "
        "wait for it (it may time out its own reads and reconnect), and it goes on after "
        "the heal",
        settings=lambda p: {"celery_broker_heartbeat": p.heartbeat},
        stack=Shape(
            workers=2,
            concurrency=1,
        ),
    ),
    Scenario(
        key="partition-long",
        title="one of two workers cut off its broker, longer than the horizon",
        implementation=Implementation.celery,
        fault=Fault(
            "partition",
            "worker-2",
            cut=lambda p, broker: 5 * horizon(p, broker),
        ),
        expected="nothing lost; past the horizon the other worker takes what the cut one "
        "held (Redis: after the visibility timeout, and the cut one may finish it too: it "
        "runs twice, written once; RabbitMQ: once the heartbeat declares the connection "
        "dead); the cut worker consumes again after the heal",
        settings=lambda p: {"celery_broker_heartbeat": p.heartbeat},
        stack=Shape(
            workers=2,
            concurrency=1,
        ),
    ),
)


FAILOVER_SETTINGS = {"notification_delay_seconds": 0.1}
FAILOVER_QUIET = 30.0  # a worker's reconnect after a failover may take that long

SCENARIOS += (
    Scenario(
        key="sentinel-failover",
        title="Redis Sentinel: the primary SIGKILLed for good, under steady traffic",
        implementation=Implementation.celery,
        fault=Fault(
            "failover",
            "broker-primary",
            restart=False,
        ),
        expected="the sentinels promote the replica; the API publishes again and the workers "
        "consume again; a write the old primary acknowledged but had not replicated is lost",
        settings=lambda p: FAILOVER_SETTINGS,
        brokers=("sentinel",),
        watch=Watch(quiet=FAILOVER_QUIET),
    ),
    Scenario(
        key="sentinel-failover-min-replicas",
        title="Redis Sentinel with min-replicas-to-write 1 (two replicas)",
        implementation=Implementation.celery,
        fault=Fault(
            "failover",
            "broker-primary",
            restart=False,
        ),
        expected="the primary refuses writes while no replica has acknowledged within 3 s "
        "(min-replicas-max-lag): that narrows the window in which an acknowledged write can "
        "be lost, it does not close it (replication stays asynchronous); the promoted replica "
        "has the other replica to write to",
        settings=lambda p: FAILOVER_SETTINGS,
        brokers=("sentinel",),
        stack=Shape(
            sentinel_replicas=2,
            min_replicas=1,
        ),
        watch=Watch(quiet=FAILOVER_QUIET),
    ),
    Scenario(
        key="cluster-leader-kill",
        title="RabbitMQ cluster of three: the queue's leader SIGKILLed for good",
        implementation=Implementation.celery,
        fault=Fault(
            "failover",
            "broker-primary",
            restart=False,
        ),
        expected="nothing lost: a quorum queue's confirmed publishes are on a majority; a new "
        "leader is elected, clients on the dead node reconnect to another",
        settings=lambda p: FAILOVER_SETTINGS,
        brokers=("rabbitmq-cluster",),
        watch=Watch(quiet=FAILOVER_QUIET),
    ),
)


def taskiq_claims(p: Params) -> dict[str, Any]:
    """taskiq's declared horizon (``ImplementationSpec.horizon``): a dead worker's
    message claimed once idle as long as Celery's visibility timeout (the rows share
    a horizon), by a read every half second."""
    horizon = IMPLEMENTATIONS[Implementation.taskiq].horizon
    assert horizon is not None
    return dict(declared(horizon)(p.visibility, 0.5))


SCENARIOS += (
    Scenario(
        key="taskiq-api-kill",
        title="taskiq-api SIGKILL",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-api"),
        expected="nothing lost: the tasks were already in the stream and the worker runs them",
        settings=taskiq_claims,
    ),
    Scenario(
        key="taskiq-worker-kill",
        title="taskiq-worker SIGKILL (stream broker)",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-worker"),
        expected="nothing lost: the stream keeps a message pending until the task is acked; "
        "a live worker claims the dead one's once idle past TASKIQ_IDLE_TIMEOUT_SECONDS and "
        "runs it again, writing once",
        settings=taskiq_claims,
    ),
    Scenario(
        key="taskiq-worker-kill-stock-claim",
        title="taskiq-worker SIGKILL (stream broker, taskiq-redis's own claim), work queued",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-worker"),
        expected="nothing lost: taskiq-redis claims a dead worker's pending messages on a read "
        "that returns new ones; the tasks queued behind the killed ones are new to the "
        "restarted worker, so its first reads past the idle timeout claim them",
        settings=lambda p: {**taskiq_claims(p), "taskiq_claim_when_idle": False},
        watch=Watch(window=loop_window),
    ),
    Scenario(
        key="taskiq-worker-kill-stock-claim-idle",
        title="taskiq-worker SIGKILL (stream broker, taskiq-redis's own claim), nothing queued",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-worker"),
        expected="the tasks the killed worker held wait: nothing new arrives, so no read claims "
        "them; at the window's end they are still awaiting redelivery, and run only when a "
        "request comes (or, with the project's broker, at the idle timeout)",
        settings=lambda p: {**taskiq_claims(p), "taskiq_claim_when_idle": False},
        # One request: its two tasks start together, so nothing waits behind the kill.
        requests=1,
        watch=Watch(window=loop_window),
    ),
    Scenario(
        key="taskiq-worker-term",
        title="taskiq-worker SIGTERM",
        implementation=Implementation.taskiq,
        fault=Fault(
            "terminate",
            "taskiq-worker",
            stop_timeout=graceful_stop_timeout,
        ),
        expected="nothing lost: the worker waits for its running tasks (taskiq's "
        "wait_tasks_timeout: none) and exits; the queued ones wait in the stream for the restart",
        settings=taskiq_claims,
    ),
    Scenario(
        key="taskiq-redis-restart",
        title="Redis SIGKILL + restart (AOF on), under taskiq",
        implementation=Implementation.taskiq,
        fault=Fault(
            "kill",
            "redis",
            wait_for_fsync=True,
        ),
        expected="nothing lost: Redis replays the stream, its pending entries and the ledger "
        "from its append-only file; a task that ended while Redis was down could not be "
        "acknowledged, so it is claimed and runs again, writing once",
        settings=taskiq_claims,
        stack=Shape(appendonly=True),
    ),
    Scenario(
        key="taskiq-slow-task",
        title="no crash, task longer than taskiq's idle timeout",
        implementation=Implementation.taskiq,
        fault=NOTHING,
        expected="nothing lost; the stream cannot tell a slow task from a dead worker: a "
        "notification pending past the idle timeout is claimed and runs again while the first "
        "run goes on (twice, writing once)",
        settings=lambda p: {**taskiq_claims(p), "taskiq_idle_timeout_seconds": p.delay / 2},
    ),
    Scenario(
        key="taskiq-hung-task",
        title="no crash, a task that hangs, under taskiq",
        implementation=Implementation.taskiq,
        fault=NOTHING,
        expected="it never ends; the stream claims it again after the idle timeout, into the "
        "next free slot, until every slot of the worker hangs on it (taskiq has no hard time "
        "limit: its timeout label cancels an async task, not a thread)",
        settings=lambda p: {**taskiq_claims(p), "notification_hang_first_attempts": 99},
        requests=1,
        watch=Watch(window=hang_window),
    ),
    Scenario(
        key="taskiq-crash-loop",
        title="a task that kills its process every time, under taskiq",
        implementation=Implementation.taskiq,
        fault=NOTHING,
        expected="the stream keeps it pending and claims it again after each idle timeout: "
        "no delivery bound, for ever; the worker command exits after its third dead process "
        "(--max-fails 3) and runs again only under a restart policy (started here once)",
        settings=lambda p: {**taskiq_claims(p), "notification_crash_first_attempts": 99},
        requests=1,
        watch=Watch(window=loop_window, revive_worker=True),
    ),
    Scenario(
        key="taskiq-worker-kill-list",
        title="taskiq-worker SIGKILL (list broker, the quick start's)",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-worker"),
        expected="the running tasks are lost: the list broker pops a message as it hands it "
        "out (BRPOP), and nothing holds it once its worker is gone",
        settings=lambda p: {"taskiq_broker": "list"},
    ),
)
BY_KEY = {s.key: s for s in SCENARIOS}


def pick(
    names: str | Sequence[str] | None,
    implementations: Sequence[Implementation] | None = None,
) -> list[Scenario]:
    """Scenarios by key ("bg-kill,worker-kill"); None or "all": every one. Only those
    of ``implementations``, when given."""
    items = ["all"] if names is None else names.split(",") if isinstance(names, str) else names
    chosen: list[Scenario] = []
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        if name == "all":
            chosen += SCENARIOS
        elif name in BY_KEY:
            chosen.append(BY_KEY[name])
        elif name == "redis-restart":  # an alias: the broker restart, on Redis
            chosen.append(BY_KEY["broker-restart"])
        else:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(BY_KEY)}")
    wanted = set(implementations or IMPLEMENTATIONS)
    return [s for s in dict.fromkeys(chosen) if s.implementation in wanted]
