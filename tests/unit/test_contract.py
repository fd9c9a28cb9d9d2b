"""The published contract: both apps' OpenAPI documents say what the apps do (every
status with its schema, readable operation ids, the email rule), and the same
thing on both. No process: the documents only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from celery_app.main import create_app as create_celery_api
from fastapi_bg.main import create_app as create_bg_api
from shared.app import version
from shared.models import EMAIL_PATTERN
from shared.settings import Settings, explicit_settings, get_settings

SHARED_PATHS = [
    "/items/",
    "/send-notification/{email}",
    "/tasks/{task_id}",
    "/tasks",
    "/runners",
    "/health",
    "/ready",
]


def openapi(
    app_factory: Callable[[Settings], FastAPI], *, experiment_routes: bool = False
) -> dict[str, Any]:
    settings = explicit_settings(
        redis_url="redis://127.0.0.1:1/0", experiment_routes=experiment_routes
    )
    app = app_factory(settings)
    # Only the schema is read: no request reaches a task.
    app.dependency_overrides[get_settings] = lambda: settings
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
    # The mechanics and the inline variant are the BackgroundTasks side's own, and
    # only mounted on request (EXPERIMENT_ROUTES=1).
    for path in ("/mechanics/blocking-async-task", "/send-notification/{email}/inline"):
        assert path not in bg["paths"]
        assert path in openapi(create_bg_api, experiment_routes=True)["paths"]


@pytest.mark.parametrize("factory", [create_bg_api, create_celery_api])
def test_the_documents_tell_what_happens(factory: Callable[[Settings], FastAPI]) -> None:
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
    # A 503 names its dependency, and says when to try again.
    not_ready = ops[("/ready", "get")]["responses"]["503"]
    assert "Retry-After" in not_ready["headers"]
    schema = not_ready["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "dependency" in doc["components"]["schemas"][schema]["required"]
    # The email rule is in the schema: the pattern the server applies.
    [email] = ops[("/send-notification/{email}", "post")]["parameters"]
    assert email["schema"]["pattern"] == EMAIL_PATTERN
    assert email["schema"]["maxLength"] == 254


def test_bg_docs_say_there_is_no_retry() -> None:
    op = openapi(create_bg_api)["paths"]["/send-notification/{email}"]["post"]
    assert "No retry" in op["description"]
