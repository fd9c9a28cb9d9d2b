"""The Celery configuration, every setting commented: ``create_celery(settings)``.

Configuration comes from ``shared.settings`` only. The worker, beat and Flower
run the app ``celery_app.worker`` makes with it; the API makes its own, to
publish (``publisher=True``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from shared.models import TaskKind
from shared.services import IMPLEMENTATIONS, Implementation
from shared.settings import Settings

QUEUE = IMPLEMENTATIONS[Implementation.celery].queue  # the one queue every task goes to
# Where RabbitMQ's quorum queue puts a message past its delivery limit, and where the
# worker reads it from to record the task as given up (``celery_app.dead_letters``).
DEAD_LETTERS = "celery.dead"

TASK_NAMES: dict[str, str] = {
    TaskKind.notification: "notifications.send",
    TaskKind.log: "logs.write",
    TaskKind.beat: "beat.periodic_log",
    TaskKind.heavy: "heavy.compute",
}


def transport_options(settings: Settings, *, publisher: bool = False) -> dict[str, Any]:
    """The broker's own options: each only where it means something. ``publisher``:
    for a process that only publishes (the API), not the worker or beat."""
    if settings.broker == "redis":
        sentinel = _sentinel(settings)
        return {
            **sentinel,
            # An unacked task (its worker died) is given back this long after its
            # delivery; a task that runs longer than this is delivered twice.
            "visibility_timeout": settings.celery_visibility_timeout,
            # How often a worker scans for unacked tasks whose timeout has passed.
            "unacked_restore_interval": settings.celery_restore_interval,
            "unacked_restore_throttle": 1,
            # The scan runs under a lock in Redis. A worker SIGKILLed while it scans
            # leaves the lock behind, and no worker restores anything until it
            # expires: kombu's default, 5 minutes, stalls every redelivery that
            # long (a lab run saw it). A scan takes milliseconds: a few scans' worth.
            "unacked_mutex_expire": max(5, round(4 * settings.celery_restore_interval)),
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_socket_timeout,
        }
    # RabbitMQ needs no timeout to give a dead worker's task back (it does so when
    # the connection closes). Publisher confirms: a publish returns only once the
    # broker has the message (persisted, on a durable queue).
    options: dict[str, Any] = {"confirm_publish": True}
    if publisher:
        # A broker that blocks publishers (its memory or disk alarm) must cost the
        # API's request seconds, not hang it: the confirm wait has its own bound
        # (the API's confirm_timeout), but closing the channel after it waits for
        # the broker's answer with none (30 s measured). The worker keeps waiting
        # instead: that is the flow control working, and its retries must not fail.
        options |= {
            "read_timeout": settings.redis_socket_timeout,
            "write_timeout": settings.redis_socket_timeout,
        }
    return options


def _sentinel(settings: Settings) -> dict[str, Any]:
    """Sentinel's own options, for a ``sentinel://`` broker URL: which primary, the
    sentinels' password and timeouts (redis-py copies no socket option to them once
    these are given), and a health check: a worker whose primary froze (its
    connection open, nothing coming) notices within seconds, not never."""
    if not settings.broker_url.lower().startswith("sentinel://"):
        return {}
    kwargs: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
    }
    if settings.celery_sentinel_password:
        kwargs["password"] = settings.celery_sentinel_password
    return {
        "master_name": settings.celery_sentinel_master,
        "sentinel_kwargs": kwargs,
        "health_check_interval": 2,
    }


def queues(settings: Settings) -> dict[str, Any]:
    """Celery's queue, as the worker and the API (which declares it when it first
    publishes) must both declare it: RabbitMQ refuses a queue or an exchange declared
    again with other arguments (PRECONDITION_FAILED). Redis: Celery's defaults."""
    if settings.broker != "rabbitmq" or settings.celery_queue_type == "classic":
        return {}
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if settings.celery_delivery_limit:
        # A message redelivered past the limit (its worker died each time) goes to the
        # dead-letter queue, at least once: it is never dropped on the way.
        arguments |= {
            "x-delivery-limit": settings.celery_delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTERS,
            "x-dead-letter-routing-key": DEAD_LETTERS,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",  # at-least-once dead-lettering needs it
        }
    return {
        # Quorum queues (RabbitMQ >= 3.8; message TTL and at-least-once dead-lettering,
        # which native delayed delivery needs, >= 3.10): replicated on a cluster,
        # with a delivery count and a delivery limit.
        "task_default_queue_type": "quorum",
        # A topic exchange: Celery's native delayed delivery (>= 5.5) routes a countdown
        # or an ETA through RabbitMQ's delay queues instead of the worker holding the
        # message unacknowledged until then (which quorum queues make impossible to do
        # well: their prefetch is fixed).
        "task_default_exchange_type": "topic",
        "task_queues": [
            Queue(
                QUEUE,
                Exchange(QUEUE, type="topic"),
                routing_key=QUEUE,
                queue_arguments=arguments,
            )
        ],
        # Per-consumer prefetch: a quorum queue refuses a channel's global QoS.
        "worker_detect_quorum_queues": True,
    }


def publishing_transport(settings: Settings) -> str | None:
    """The API's transport: kombu's Redis transport, reusing its client (plain
    ``redis://`` URLs; Sentinel and RabbitMQ keep their own)."""
    scheme = settings.broker_url.split("://", 1)[0].lower()
    return "celery_app.handover:PublishingTransport" if scheme in ("redis", "rediss") else None


def create_celery(
    settings: Settings, *, publisher: bool = False, app_class: type[Celery] = Celery
) -> Celery:
    """The app, configured. ``app_class``: the API's own (``celery_app.handover``)."""
    celery = app_class("bgtasks_vs_celery", include=["celery_app.tasks"])
    celery.conf.update(
        # All three, explicitly: Celery reads CELERY_BROKER_URL from the environment
        # ahead of broker_url, but the read and write URLs set here come first.
        broker_url=settings.broker_url,
        broker_read_url=settings.broker_url,
        broker_write_url=settings.broker_url,
        # JSON only: a pickle payload from anyone who can write to the broker would be code.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        # The ledger records outcomes; no result backend needed.
        task_ignore_result=True,
        # Ack after the task ran, not before: a worker that dies mid-task leaves the
        # message unacked, and the broker gives it back (Redis: after the visibility
        # timeout; RabbitMQ: when the connection drops).
        task_acks_late=settings.celery_acks_late,
        # ...and a task whose pool child was killed is requeued rather than marked failed.
        # A task that kills its process every time would loop for ever: the worker
        # bounds it (CELERY_MAX_DELIVERIES, ``celery_app.tasks``), or, on a quorum
        # queue, RabbitMQ's delivery limit does.
        task_reject_on_worker_lost=True,
        # A hung task ends: SoftTimeLimitExceeded inside it, then its pool process is
        # killed (the worker records it as failed and acknowledges it, so it is not
        # handed out again). 0: no limit.
        task_soft_time_limit=settings.task_soft_time_limit or None,
        task_time_limit=settings.task_time_limit or None,
        # Reserve one task per pool process: a crash strands no prefetched backlog.
        worker_prefetch_multiplier=settings.celery_prefetch_multiplier,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_transport_options=transport_options(settings, publisher=publisher),
        # The API only publishes: on Redis through one client per channel, not one
        # per command (``celery_app.handover.PublishingTransport``).
        broker_transport=publishing_transport(settings) if publisher else None,
        # RabbitMQ: the queue survives a broker restart (durable, Celery's default
        # for the queues it declares) and so do its messages (persistent).
        task_default_delivery_mode="persistent",
        # Connecting gives up quickly (AMQP; Redis has its socket timeouts above).
        broker_connection_timeout=settings.redis_socket_timeout,
        # RabbitMQ: a connection that has gone silent (a partition) is dead after about
        # this long, on both sides (CELERY_BROKER_HEARTBEAT; Celery's default: 120 s,
        # capped by the broker's 60).
        broker_heartbeat=settings.celery_broker_heartbeat,
        # Explicit, so Celery 6's change of default changes nothing here.
        broker_connection_retry_on_startup=True,
        # Publishing gives up quickly: the API answers 503 instead of hanging.
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        # Events, so Flower sees what the workers do; and the task-sent event, so it
        # sees a task from the moment it is sent (CELERY_SEND_SENT_EVENT: a publish
        # of its own per task, which the capacity experiment measures).
        worker_send_task_events=True,
        task_send_sent_event=settings.celery_send_sent_event,
        beat_schedule={
            "periodic-log": {
                "task": TASK_NAMES[TaskKind.beat],
                "schedule": settings.beat_interval_seconds,
            }
        },
        # Beat syncs after every task it sends, and its scheduler marks each sync:
        # the healthcheck reads that mark's age (``celery_app.beat_health``).
        beat_sync_every=1,
        beat_scheduler="celery_app.beat_schedule:AliveScheduler",
        timezone="UTC",
        **queues(settings),
    )
    return celery
