"""The Celery settings that carry the comparison (``celery_app.config``)."""

from __future__ import annotations

from celery_app.config import TASK_NAMES, create_celery
from shared.settings import Settings


def test_celery_settings_that_carry_the_comparison() -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        celery_visibility_timeout=7,
        celery_restore_interval=0.5,
        beat_interval_seconds=2,
    )
    conf = create_celery(settings).conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.event_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_connection_retry_on_startup is True
    assert conf.worker_send_task_events is True
    # The task-sent event is a setting (off by default: its cost, docs/measured.md).
    assert conf.task_send_sent_event is False
    assert create_celery(Settings(celery_send_sent_event=True)).conf.task_send_sent_event
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 7
    assert options["unacked_restore_interval"] == 0.5
    [entry] = conf.beat_schedule.values()
    assert entry == {"task": TASK_NAMES["beat"], "schedule": 2}
    # The stock-acks switch is a setting, not a code fork.
    assert create_celery(Settings(celery_acks_late=False)).conf.task_acks_late is False


def test_on_rabbitmq_only_the_api_gives_up_on_a_broker_that_does_not_answer() -> None:
    settings = Settings(celery_broker_url="amqp://u:p@127.0.0.1:1//", redis_socket_timeout=1.5)
    worker = create_celery(settings).conf.broker_transport_options
    api = create_celery(settings, publisher=True).conf.broker_transport_options
    assert worker == {"confirm_publish": True}  # flow control blocks it: it waits
    assert api == {"confirm_publish": True, "read_timeout": 1.5, "write_timeout": 1.5}


def test_time_limits_reach_celery_and_zero_means_none() -> None:
    conf = create_celery(Settings(task_soft_time_limit=3, task_time_limit=4)).conf
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (3, 4)
    conf = create_celery(Settings(task_soft_time_limit=0, task_time_limit=0)).conf
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (None, None)


def test_on_rabbitmq_the_queue_is_a_quorum_queue_with_a_delivery_limit() -> None:
    conf = create_celery(Settings(celery_broker_url="amqp://u:p@h//", celery_delivery_limit=4)).conf
    [queue] = conf.task_queues
    assert queue.name == "celery" and queue.exchange.type == "topic"  # native delayed delivery
    assert queue.queue_arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 4,
        "x-dead-letter-exchange": "celery.dead",
        "x-dead-letter-routing-key": "celery.dead",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert conf.worker_detect_quorum_queues is True
    # The API makes its app from the same settings: it declares the very same queue.
    api = create_celery(
        Settings(celery_broker_url="amqp://u:p@h//", celery_delivery_limit=4), publisher=True
    ).conf
    assert api.task_queues == conf.task_queues
    # Classic, for comparison; and Redis has neither.
    classic = Settings(celery_broker_url="amqp://u:p@h//", celery_queue_type="classic")
    assert create_celery(classic).conf.task_queues is None
    assert create_celery(Settings(redis_url="redis://h:1/0")).conf.task_queues is None


def test_a_worker_killed_mid_scan_holds_redis_restore_lock_seconds_not_minutes() -> None:
    options = create_celery(Settings(celery_restore_interval=0.5)).conf.broker_transport_options
    assert options["unacked_mutex_expire"] <= 10  # kombu's default: 300


def test_a_retry_countdown_on_a_quorum_queue_is_a_second_at_least() -> None:
    from celery_app.tasks import backoff

    quorum = Settings(celery_broker_url="amqp://u:p@h//", retry_backoff_seconds=0.1)
    assert all(backoff(0, quorum) >= 1.0 for _ in range(50))
    redis = Settings(redis_url="redis://h:1/0", retry_backoff_seconds=0.1, retry_jitter=False)
    assert backoff(0, redis) == 0.1
