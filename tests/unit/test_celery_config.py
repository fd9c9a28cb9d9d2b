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
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is True
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
