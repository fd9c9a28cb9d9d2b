"""Shape and configuration: the HTTP contract is identical on both apps, the
Celery settings that carry the comparison are the ones the README names, and
the work is idempotent per task id. No timing here, so no processes needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from celery_app.main import create_app as create_celery_api
from celery_app.worker import TASK_NAMES, create_celery
from fastapi_bg.main import create_app as create_bg_api
from shared.api import version
from shared.models import EMAIL_PATTERN
from shared.settings import Settings, get_settings
from shared.work import has_effect, write_log

SHARED_PATHS = [
    "/items/",
    "/send-notification/{email}",
    "/tasks/{task_id}",
    "/tasks",
    "/runners",
    "/health",
]


def openapi(app_factory: Callable[[], FastAPI]) -> dict[str, Any]:
    app = app_factory()
    # Only the schema is read: no request reaches a task.
    app.dependency_overrides[get_settings] = lambda: Settings(redis_url="redis://127.0.0.1:1/0")
    with TestClient(app) as client:
        schema: dict[str, Any] = client.get("/openapi.json").json()
    return schema


def test_both_apps_expose_the_same_contract() -> None:
    bg, celery = openapi(create_bg_api), openapi(create_celery_api)
    for path in SHARED_PATHS:
        a, b = bg["paths"][path], celery["paths"][path]
        for method in a:
            for key in ("parameters", "requestBody", "operationId", "tags"):
                assert a[method].get(key) == b[method].get(key), (path, method, key)
            # The one difference: publishing to a broker can fail (503); BackgroundTasks'
            # hand-over cannot.
            ra = {k: v for k, v in a[method]["responses"].items() if k != "503"}
            rb = {k: v for k, v in b[method]["responses"].items() if k != "503"}
            assert ra == rb, (path, method)
    for path in ("/items/", "/send-notification/{email}"):
        assert "503" in celery["paths"][path]["post"]["responses"]
        assert "503" not in bg["paths"][path]["post"]["responses"]
    assert (
        bg["components"]["schemas"]["ItemAccepted"]
        == celery["components"]["schemas"]["ItemAccepted"]
    )
    # The mechanics and the inline variant are the BackgroundTasks side's own.
    assert "/mechanics/blocking-async-task" in bg["paths"]
    assert "/send-notification/{email}/inline" in bg["paths"]


@pytest.mark.parametrize("factory", [create_bg_api, create_celery_api])
def test_the_documents_tell_what_happens(factory: Callable[[], FastAPI]) -> None:
    doc = openapi(factory)
    assert doc["info"]["version"] == version()
    ops = {(p, m): op for p, methods in doc["paths"].items() for m, op in methods.items()}
    # Work accepted for later: 202. Each operation: a readable id and a tag.
    assert "202" in ops[("/items/", "post")]["responses"]
    assert "202" in ops[("/send-notification/{email}", "post")]["responses"]
    assert ops[("/items/", "post")]["operationId"] == "create_item"
    assert ops[("/send-notification/{email}", "post")]["operationId"] == "send_notification"
    assert {t for op in ops.values() for t in op["tags"]} >= {
        "items",
        "notifications",
        "tasks",
        "health",
    }
    # Every status other than the success is declared with a schema.
    for (path, method), op in ops.items():
        for code, response in op["responses"].items():
            assert "content" in response, (path, method, code)
    assert {"413", "400", "422"} <= set(ops[("/items/", "post")]["responses"])
    assert "404" in ops[("/tasks/{task_id}", "get")]["responses"]
    # The email rule is in the schema: the pattern the server applies.
    [email] = ops[("/send-notification/{email}", "post")]["parameters"]
    assert email["schema"]["pattern"] == EMAIL_PATTERN
    assert email["schema"]["maxLength"] == 254


def test_bg_docs_say_there_is_no_retry() -> None:
    op = openapi(create_bg_api)["paths"]["/send-notification/{email}"]["post"]
    assert "No retry" in op["description"]


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


def test_write_log_is_idempotent_per_task_id(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    assert write_log("first", task_id="t-1", log_file=log) is True
    assert write_log("again", task_id="t-1", log_file=log) is False
    assert write_log("other", task_id="t-2", log_file=log) is True
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "[t-1] first" in lines[0] and "[t-2] other" in lines[1]


@pytest.mark.parametrize("value", ["0.2", "3"])
def test_notification_delay_accepts_floats(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_DELAY_SECONDS", value)
    assert Settings().notification_delay_seconds == float(value)


def test_the_idempotency_check_reads_the_marker_not_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    assert write_log("first", task_id="t-1", log_file=log) is True
    assert has_effect(log, "t-1") and not has_effect(log, "t-2")
    # A marker whose offset holds another task's line (killed between the marker and
    # the line, someone else wrote there) reads as "not written": it is written again.
    log.write_text("")
    assert write_log("other", task_id="t-2", log_file=log) is True
    assert not has_effect(log, "t-1")
    assert write_log("again", task_id="t-1", log_file=log) is True
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [line.split()[1] for line in lines] == ["[t-2]", "[t-1]"]
