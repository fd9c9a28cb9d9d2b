"""Both running apps answer what their published OpenAPI documents say, for a
generated set of valid and invalid requests (schemathesis, positive and negative):
every response's status is declared for its operation and its body matches the
declared schema, and none is a 5xx.

Real uvicorns and a real redis-server (and a worker, so the Celery side's tasks
run); the schema is read from the running app, as a client would. The
``/mechanics`` endpoints are left out: they sleep, or block the event loop, for
up to 30 s on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode

from harness.local import LocalStack
from tests.integration.conftest import StackFactory

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(make_module_stack: StackFactory) -> Iterator[LocalStack]:
    # Quick work: the fuzz is about what the apps answer, not about what the jobs cost
    # (a heavy job of the default size holds a core for 65 ms, per example).
    stack = make_module_stack(notification_delay_seconds=0.01, heavy_task_rounds=1000)
    stack.start_all(("redis", "bg-api", "celery-api", "worker"))
    yield stack


def _schema(url: str) -> Any:
    return schemathesis.openapi.from_url(f"{url}/openapi.json").exclude(path_regex="^/mechanics/")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("side", ["bg", "celery"])
def test_each_app_keeps_to_its_openapi(stack: LocalStack, side: str, mode: GenerationMode) -> None:
    schema = _schema(stack.url(side))
    # Every operation gets cases of its own (the strategy spreads them over all).
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/items/", "/send-notification/{email}"}

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(
        max_examples=60 * len(operations),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        case.call_and_validate()

    check()
