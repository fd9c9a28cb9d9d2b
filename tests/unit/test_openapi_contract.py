"""The contract, held by a test: every declared implementation declares its routes
itself, and their OpenAPI documents must agree on every shared operation (paths,
methods, parameters, request and response schemas, statuses). Only the descriptions
differ (each says how it delivers), and a broker's 503 (a broker can refuse a
hand-over; BackgroundTasks' cannot fail). No process: the documents only."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from shared.services import IMPLEMENTATIONS as DECLARED
from shared.services import Delivery, Implementation
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
# Where an implementation with a broker may answer 503 and one without cannot.
PUBLISHING = {"/items/", "/send-notification/{email}", "/heavy"}
IMPLEMENTATIONS = list(DECLARED)
WITH_A_BROKER = [impl for impl, d in DECLARED.items() if d.delivery == Delivery.broker]
# The one every other is compared with.
REFERENCE = IMPLEMENTATIONS[0]


def factory(impl: Implementation) -> Callable[[Settings], FastAPI]:
    module = importlib.import_module(f"{DECLARED[impl].package}.main")
    create: Callable[[Settings], FastAPI] = module.create_app
    return create


def document(impl: Implementation, *, experiment_routes: bool = False) -> dict[str, Any]:
    settings = explicit_settings(experiment_routes=experiment_routes)
    doc: dict[str, Any] = factory(impl)(settings).openapi()  # no lifespan: the schema only
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


@pytest.mark.parametrize("impl", IMPLEMENTATIONS[1:])
@pytest.mark.parametrize(("path", "method"), SHARED)
def test_every_app_declares_the_same_operation(
    path: str, method: str, impl: Implementation
) -> None:
    reference, other = document(REFERENCE), document(impl)

    def publishes(i: Implementation) -> bool:
        return path in PUBLISHING and i in WITH_A_BROKER

    a = operation(reference, path, method, drop_503=publishes(REFERENCE))
    b = operation(other, path, method, drop_503=publishes(impl))
    assert a == b
    # ...and every schema it refers to is the same schema.
    assert without_descriptions(referenced(a, reference, {})) == without_descriptions(
        referenced(b, other, {})
    )


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_only_a_hand_over_to_a_broker_can_be_refused_with_a_503(impl: Implementation) -> None:
    doc = document(impl)
    for path in PUBLISHING:
        assert ("503" in doc["paths"][path]["post"]["responses"]) is (impl in WITH_A_BROKER)


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(p, m): op for p, methods in doc["paths"].items() for m, op in methods.items()}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_by_default_the_document_holds_the_contract_alone(impl: Implementation) -> None:
    assert set(operations(document(impl))) == set(SHARED)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_experiment_routes_are_mounted_on_request_and_tagged(impl: Implementation) -> None:
    ops = operations(document(impl, experiment_routes=True))
    extra = set(ops) - set(SHARED)
    # An implementation with experiment routes of its own mounts them, each tagged.
    has_them = importlib.util.find_spec(f"{DECLARED[impl].package}.experiment_routes")
    assert bool(extra) is (has_them is not None), extra
    assert all("experiments" in ops[key]["tags"] for key in extra), extra
