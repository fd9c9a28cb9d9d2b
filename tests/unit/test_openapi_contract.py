"""The contract, held by a test: both apps declare their routes themselves, and
their OpenAPI documents must agree on every shared operation (paths, methods,
parameters, request and response schemas, statuses). Only the descriptions
differ (each says how its side delivers), and the Celery side's 503 (a broker
can refuse a publish). No process: the documents only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from celery_app.main import create_app as create_celery_api
from fastapi_bg.main import create_app as create_bg_api
from shared.settings import Settings, explicit_settings

SHARED = [
    ("/items/", "post"),
    ("/send-notification/{email}", "post"),
    ("/heavy", "post"),
    ("/tasks/{task_id}", "get"),
    ("/tasks", "get"),
    ("/runners", "get"),
    ("/health", "get"),
    ("/ready", "get"),
]
# Where the Celery side may answer 503 and the BackgroundTasks side cannot.
PUBLISHING = {"/items/", "/send-notification/{email}", "/heavy"}


def document(
    factory: Callable[[Settings], FastAPI], *, experiment_routes: bool = False
) -> dict[str, Any]:
    settings = explicit_settings(experiment_routes=experiment_routes)
    doc: dict[str, Any] = factory(settings).openapi()  # no lifespan, no Redis: the schema only
    return doc


def without_descriptions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [without_descriptions(v) for v in value]
    return value


def referenced(value: Any, doc: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """The component schemas ``value`` refers to, and theirs, by name."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            if name not in found:
                found[name] = doc["components"]["schemas"][name]
                referenced(found[name], doc, found)
        for v in value.values():
            referenced(v, doc, found)
    elif isinstance(value, list):
        for v in value:
            referenced(v, doc, found)
    return found


def operation(doc: dict[str, Any], path: str, method: str, *, drop_503: bool) -> dict[str, Any]:
    op = dict(doc["paths"][path][method])
    if drop_503:
        op["responses"] = {k: v for k, v in op["responses"].items() if k != "503"}
    stripped: dict[str, Any] = without_descriptions(op)
    return stripped


@pytest.mark.parametrize(("path", "method"), SHARED)
def test_both_apps_declare_the_same_operation(path: str, method: str) -> None:
    bg, celery = document(create_bg_api), document(create_celery_api)
    a = operation(bg, path, method, drop_503=False)
    b = operation(celery, path, method, drop_503=path in PUBLISHING)
    assert a == b
    # ...and every schema it refers to is the same schema.
    assert without_descriptions(referenced(a, bg, {})) == without_descriptions(
        referenced(b, celery, {})
    )


def test_only_publishing_can_be_refused_with_a_503() -> None:
    bg, celery = document(create_bg_api), document(create_celery_api)
    for path in PUBLISHING:
        assert "503" in celery["paths"][path]["post"]["responses"]
        assert "503" not in bg["paths"][path]["post"]["responses"]


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(p, m): op for p, methods in doc["paths"].items() for m, op in methods.items()}


@pytest.mark.parametrize("factory", [create_bg_api, create_celery_api])
def test_by_default_the_document_holds_the_contract_alone(
    factory: Callable[[Settings], FastAPI],
) -> None:
    assert set(operations(document(factory))) == set(SHARED)


@pytest.mark.parametrize("factory", [create_bg_api, create_celery_api])
def test_experiment_routes_are_mounted_on_request_and_tagged(
    factory: Callable[[Settings], FastAPI],
) -> None:
    ops = operations(document(factory, experiment_routes=True))
    extra = set(ops) - set(SHARED)
    assert extra, "each app has its experiment routes"
    assert all("experiments" in ops[key]["tags"] for key in extra), extra
