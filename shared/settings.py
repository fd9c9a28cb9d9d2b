"""One settings class for every process (both APIs, the worker, beat, the experiments).

Every field is read from an environment variable of the same name in upper case;
``.env.example`` documents each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# The development default every secret of the demo falls back to: production refuses it.
PLACEHOLDER = "change-me"


class SettingsRefused(RuntimeError):
    """A setting production will not start with. Not a ValueError on purpose: pydantic
    wraps those with the input, and the input holds the secrets."""


@dataclass(frozen=True)
class Retention:
    """How long the ledger keeps a task's record, seconds (0: for ever): ``finished``
    after it finished, ``unfinished`` after its last change while it has not."""

    finished: float
    unfinished: float

    @property
    def forgets_after(self) -> float | None:
        """The soonest a record may expire, counted from the task's hand-over (None: never)."""
        bounds = [b for b in (self.finished, self.unfinished) if b > 0]
        return min(bounds) if bounds else None

    @property
    def index_horizon(self) -> float | None:
        """How old an index entry (scored by hand-over) may get before its record has
        expired either way, unless a task's changes went on past ``unfinished``."""
        if self.finished <= 0 or self.unfinished <= 0:
            return None
        return self.finished + self.unfinished


class Settings(BaseSettings):
    # A refused value is never echoed: URLs here carry passwords.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    # The ledger for every implementation, and Celery's broker unless CELERY_BROKER_URL names
    # another. The BackgroundTasks app treats it as optional: it serves without Redis
    # and only loses its ledger.
    redis_url: str = "redis://localhost:6379/0"
    # Celery's broker: empty for REDIS_URL; amqp://user:password@host:5672// for
    # RabbitMQ. (Celery itself also reads this variable, ahead of its configuration:
    # the same name keeps the two in agreement.)
    celery_broker_url: str = ""
    # Redis Sentinel as the broker (CELERY_BROKER_URL=sentinel://...;sentinel://...):
    # the name the sentinels know the primary by, and their own password, if any.
    celery_sentinel_master: str = ""
    celery_sentinel_password: str = ""
    # Fail fast when Redis (or the broker's connection) is gone: a publishing endpoint
    # answers 503 instead of hanging.
    redis_socket_timeout: float = Field(default=1.0, gt=0)

    log_file: str = "log.txt"
    # Every process's log level (both APIs, the worker, beat): one logging setup.
    # Any case: "info" is INFO.
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    # text: one readable line per record; json: one JSON object per line (a log
    # collector's input), with the task id where a record has one.
    log_format: Literal["text", "json"] = "text"
    # production: every process refuses to start with an empty secret or a
    # development default (``PLACEHOLDER``), naming the variable.
    environment: Literal["development", "production"] = "development"
    # 1: the APIs mount their experiment-only routes (the harness and the lab set it).
    # Off, an API's OpenAPI document holds the contract alone: some of those routes
    # block the event loop or publish to queues no worker consumes.
    experiment_routes: bool = False
    # Request bodies over this many bytes are refused with 413 before they are read.
    max_body_bytes: int = Field(default=16 * 1024, ge=1)
    # The experiments' switch: off, nothing writes to the ledger (the API's queued
    # record, the task's runs, the heartbeats), to measure what the ledger costs.
    ledger_enabled: bool = True
    # How long a finished task's record and its effect's index marker are kept,
    # seconds; 0: for ever (its index entry goes when a read finds the record gone,
    # or once older than both retentions together). A task that has not finished is
    # kept up to LEDGER_UNFINISHED_RETENTION_SECONDS after its last change.
    ledger_retention_seconds: float = Field(default=86_400.0, ge=0)
    ledger_unfinished_retention_seconds: float = Field(default=7 * 86_400.0, ge=0)

    # The chapter's time.sleep in send_notification: how long a notification takes.
    notification_delay_seconds: float = Field(default=3.0, ge=0)
    # The heavy job's size: rounds of pure-Python arithmetic (about 65 ms per million
    # on the reference machine; the heavy experiment sizes it for the machine it runs on).
    heavy_task_rounds: int = Field(default=1_000_000, ge=1, le=1_000_000_000)
    # The first N attempts of every notification raise a transient error.
    notification_fail_first_attempts: int = Field(default=0, ge=0)
    # Test switches like it: the first N attempts hang for good (nothing ends them,
    # a soft time limit included: only a kill does), or kill their own process
    # (SIGKILL: a segfault, an OOM kill).
    notification_hang_first_attempts: int = Field(default=0, ge=0)
    notification_crash_first_attempts: int = Field(default=0, ge=0)
    # Celery only: retries after the first attempt, and their backoff
    # (base * 2**retry, capped, with full jitter).
    notification_max_retries: int = Field(default=3, ge=0)
    retry_backoff_seconds: float = Field(default=1.0, ge=0)
    retry_backoff_max_seconds: float = Field(default=30.0, ge=0)
    # Full jitter on the backoff (uniform in [0, the backoff]); off: exactly the
    # backoff (the crash experiment needs a countdown it can predict).
    retry_jitter: bool = True

    # Redis broker only (kombu's Redis transport): an unacknowledged task is given
    # back to the queue this long after it was delivered. Tasks that run longer than
    # this run twice. RabbitMQ has no such timeout: it gives an unacknowledged task
    # back when the consumer's connection closes.
    celery_visibility_timeout: float = Field(default=60.0, gt=0)
    # Redis broker only: how often a worker scans for such tasks (kombu's
    # unacked_restore_interval).
    celery_restore_interval: float = Field(default=5.0, gt=0)
    # The switch between this project's reliable settings (True) and Celery's
    # stock acknowledgement, which acks a task as it starts (False).
    celery_acks_late: bool = True
    celery_prefetch_multiplier: int = Field(default=1, ge=0)
    # RabbitMQ: the AMQP heartbeat the worker asks for, seconds (the broker's own, 60,
    # caps it; 0: none). A connection silent for about this long is dead: RabbitMQ
    # requeues what its consumer held, and the worker reconnects. A cut-off worker
    # holds its tasks that long (docs/brokers.md).
    celery_broker_heartbeat: float = Field(default=10.0, ge=0)

    # Celery: the task-sent event (Flower shows a task from the moment it is sent; without
    # it, from the moment a worker receives it). A publish of its own per task, under a
    # lock every publishing thread shares: its cost to the API's capacity is measured
    # (docs/measured.md, Capacity), for what the ledger shows anyway. Off; the compose
    # demo turns it on, for Flower.
    celery_send_sent_event: bool = False

    # Celery: a task's soft time limit (SoftTimeLimitExceeded is raised inside it;
    # recorded as failed) and its hard one (its pool process is killed; the worker
    # records it as failed and acknowledges it), seconds; 0: none. Above the longest
    # task; on Redis below the visibility timeout, less the restore interval, or a
    # task still running then is handed out again before the limit ends it.
    task_soft_time_limit: float = Field(default=30.0, ge=0)
    task_time_limit: float = Field(default=40.0, ge=0)
    # Celery, where the broker has no bound of its own (Redis; RabbitMQ's classic
    # queues): a task delivered this many times already (its process died each time)
    # is failed, "gave up after N deliveries", before it would run again; 0: no bound.
    celery_max_deliveries: int = Field(default=5, ge=0)
    # RabbitMQ: the type of Celery's queue. quorum: replicated, with a delivery limit
    # and native delayed delivery for countdowns; classic: the single-node queue.
    celery_queue_type: Literal["quorum", "classic"] = "quorum"
    # RabbitMQ quorum queues: redeliveries before the broker dead-letters a message
    # (to celery.dead, where the worker records it as given up); 0: the broker's own
    # (none on RabbitMQ 3.x, 20 on 4.x, with no dead-letter queue).
    celery_delivery_limit: int = Field(default=5, ge=0)

    beat_interval_seconds: float = Field(default=30.0, gt=0)

    # taskiq's broker: empty for REDIS_URL (taskiq-redis; the ledger stays on REDIS_URL).
    taskiq_broker_url: str = ""
    # stream: RedisStreamBroker, acknowledged after the task ran (at least once);
    # list: ListQueueBroker, the quick start's, popped and gone (at most once).
    taskiq_broker: Literal["stream", "list"] = "stream"
    # The stream broker hands a message a dead consumer held to another once it has
    # been pending this long (taskiq-redis's idle_timeout; its default: 600 s). A task
    # that runs longer than this runs twice.
    taskiq_idle_timeout_seconds: float = Field(default=600.0, gt=0)
    # The stream broker claims such messages only after a read returned new ones:
    # an idle stream never gives a dead worker's task back. True: it also claims when
    # a read times out (every TASKIQ_READ_BLOCK_SECONDS); False: taskiq-redis as it is.
    taskiq_claim_when_idle: bool = True
    taskiq_read_block_seconds: float = Field(default=2.0, gt=0)

    # --- dramatiq ---
    # dramatiq's broker: empty for REDIS_URL; amqp://user:password@host:5672/vhost for
    # RabbitMQ (the scheme picks RedisBroker or RabbitmqBroker; the ledger stays on REDIS_URL).
    dramatiq_broker_url: str = ""
    # Redis broker: a worker process that has sent no command for this long is dead, and
    # the messages it had fetched go back to their queue at the next maintenance pass
    # (dramatiq's heartbeat_timeout, 60 s). A live worker sends one at least every second
    # (its consumers' polls), so a slow task does not run twice.
    dramatiq_heartbeat_timeout_seconds: float = Field(default=60.0, gt=0)
    # Redis broker: how many commands out of a million run that maintenance pass
    # (dramatiq's maintenance_chance, 1000: about one poll in a thousand).
    dramatiq_maintenance_chance: int = Field(default=1000, ge=1, le=1_000_000)
    # Deliveries that started a run (its process died each time) before the worker
    # dead-letters the task instead of running it again; 0: no bound (dramatiq's Redis
    # and RabbitMQ brokers count none of their own).
    dramatiq_max_deliveries: int = Field(default=5, ge=0)

    # --- RQ ---
    # RQ's broker: empty for REDIS_URL (RQ runs on Redis only; the ledger stays on REDIS_URL).
    rq_broker_url: str = ""
    # A job running longer than this gets JobTimeoutException from its work horse's alarm
    # (recorded failed); one that swallows it is killed 60 s later by its worker (RQ's
    # fixed margin). RQ's default: 180. Whole seconds (signal.alarm).
    rq_job_timeout_seconds: int = Field(default=180, ge=1)
    # true: notifications are enqueued with Retry(max=NOTIFICATION_MAX_RETRIES, interval=
    # the backoff, whole seconds): RQ runs a job that raised again, and one abandoned
    # by a dead worker too, while retries are left. false: RQ as it ships (no retry).
    rq_retry: bool = True
    # How often a worker checks on its work horse and renews the running job's
    # heartbeat (rq worker --job-monitoring-interval; RQ's default: 30).
    rq_job_monitoring_interval_seconds: int = Field(default=30, ge=1)
    # How often an idle worker cleans the registries: a started job whose heartbeat
    # expired (its worker died) is moved to the FailedJobRegistry, or retried
    # (rq worker --maintenance-interval; RQ's default: 600). A busy worker never does.
    rq_maintenance_interval_seconds: int = Field(default=600, ge=1)
    # A started job's heartbeat outlives its last renewal by this much before the
    # cleanup calls it abandoned (RQ: 60, fixed in Worker.get_heartbeat_ttl).
    rq_abandoned_grace_seconds: int = Field(default=60, ge=1)

    # Flower's users (user:password, comma-separated), which Flower reads itself: read
    # here only so that production refuses an empty or placeholder password in it.
    flower_basic_auth: str | None = Field(default=None, repr=False)

    # BackgroundTasks only: the tokens of AnyIO's default thread limiter, which sync
    # endpoints, sync dependencies and sync background tasks all share (None keeps
    # AnyIO's 40). experiments/perf/threadpool.py measures what raising it changes.
    threadpool_tokens: int | None = Field(default=None, ge=1)

    # How often each process that runs tasks writes its heartbeat to the ledger:
    # a run whose process has stopped beating is a run that died with it.
    runner_heartbeat_seconds: float = Field(default=1.0, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _limits(self) -> Settings:
        soft, hard = self.task_soft_time_limit, self.task_time_limit
        if soft and hard and soft >= hard:
            raise ValueError(
                f"TASK_SOFT_TIME_LIMIT ({soft:g}) must be below TASK_TIME_LIMIT ({hard:g}): "
                "the soft limit lets a task clean up before the hard one kills it"
            )
        if self.environment == "production":
            refused = production_refusals(self)
            if refused:
                raise SettingsRefused(
                    "ENVIRONMENT=production refuses to start: " + "; ".join(refused)
                )
        return self

    @property
    def broker_bounds_deliveries(self) -> bool:
        """Does the broker bound a task's redeliveries itself (RabbitMQ's quorum queues)?"""
        return (
            self.broker == "rabbitmq"
            and self.celery_queue_type == "quorum"
            and self.celery_delivery_limit > 0
        )

    @property
    def retention(self) -> Retention:
        return Retention(self.ledger_retention_seconds, self.ledger_unfinished_retention_seconds)

    @property
    def ledger_off(self) -> str | None:
        """Why nothing is recorded (the switch, or no Redis to record in); None: it is on."""
        if not self.ledger_enabled:
            return "LEDGER_ENABLED=false"
        if not self.redis_url:
            return "REDIS_URL is not set"
        return None

    @property
    def ledger_on(self) -> bool:
        return self.ledger_off is None

    @property
    def broker_url(self) -> str:
        """Celery's broker: ``CELERY_BROKER_URL``, or Redis."""
        return self.celery_broker_url or self.redis_url

    @property
    def taskiq_url(self) -> str:
        """taskiq's broker: ``TASKIQ_BROKER_URL``, or Redis."""
        return self.taskiq_broker_url or self.redis_url

    @property
    def dramatiq_url(self) -> str:
        """dramatiq's broker: ``DRAMATIQ_BROKER_URL``, or Redis."""
        return self.dramatiq_broker_url or self.redis_url

    @property
    def rq_url(self) -> str:
        """RQ's Redis: ``RQ_BROKER_URL``, or Redis."""
        return self.rq_broker_url or self.redis_url

    @property
    def broker(self) -> str:
        """Which broker: "redis" (kombu's Redis transport) or "rabbitmq" (AMQP)."""
        scheme = self.broker_url.split("://", 1)[0].lower()
        return "redis" if scheme in ("redis", "rediss", "redis+socket", "sentinel") else "rabbitmq"

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated; nothing read from the environment."""
        return explicit_settings(**{**self.model_dump(), **changes})

    def to_env(self) -> dict[str, str]:
        """These settings as the environment variables a child process reads them from.

        The one way settings reach the processes the harness starts. ``None`` (a
        default the library decides, like AnyIO's 40 tokens) is left out.
        """
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, bool):
                env[name.upper()] = "true" if value else "false"
            elif isinstance(value, float):
                env[name.upper()] = repr(value)
            else:
                env[name.upper()] = str(value)
        return env


def _url_passwords(url: str) -> list[str | None]:
    """The password of each URL in ``url`` (kombu takes several, ``;``-separated)."""
    return [urlsplit(part).password for part in url.split(";") if part]


def production_refusals(settings: Settings) -> list[str]:
    """What production refuses in these settings, each naming its variable (never a
    value): a development default anywhere, an empty password where one is needed."""
    refused = [
        f"{name.upper()} holds the development default {PLACEHOLDER!r}"
        for name, value in settings.model_dump().items()
        if isinstance(value, str) and PLACEHOLDER in value
    ]
    if not settings.redis_url:
        refused.append("REDIS_URL is empty")
    elif not all(_url_passwords(settings.redis_url)):
        refused.append("REDIS_URL has no password (Redis must require one)")
    for name in ("celery_broker_url", "taskiq_broker_url", "dramatiq_broker_url", "rq_broker_url"):
        url = getattr(settings, name)
        if url and not all(_url_passwords(url)):
            refused.append(f"{name.upper()} has no password")
    if settings.flower_basic_auth is not None:
        users = [u.partition(":") for u in settings.flower_basic_auth.split(",")]
        if not users or any(not user or not sep or not pw for user, sep, pw in users):
            refused.append("FLOWER_BASIC_AUTH has an empty user or password")
    return refused


class _Explicit(Settings):
    """Settings from the given values and the defaults only: what a harness hands a
    child process must not depend on the environment it was started from."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def explicit_settings(**values: Any) -> Settings:
    """``values`` on top of the defaults, validated; the environment and .env are not read."""
    return _Explicit(**values)


def redact(url: str) -> str:
    """A URL as a log line may show it: its password replaced by ``***`` (each of a
    ``;``-separated list, as kombu takes several brokers)."""
    if ";" in url:
        return ";".join(redact(part) for part in url.split(";"))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


@lru_cache
def get_settings() -> Settings:
    return Settings()
