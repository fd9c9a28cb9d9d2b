"""The heavy experiment's configurations, from the declaration and the packages'
experiment routes (imported, no process)."""

from __future__ import annotations

import pytest

from experiments.perf.heavy import HEAVY, HEAVY_ASYNC, configs_for, pick, routes_of
from experiments.reporting.heavy import processes_text
from shared.services import IMPLEMENTATIONS, Delivery, Implementation

ALL = tuple(IMPLEMENTATIONS)


def test_the_chapters_two_keep_the_committed_reports_keys_and_labels() -> None:
    configs = configs_for((Implementation.bg, Implementation.celery), [1, 2])
    assert [c.key for c in configs] == [
        "bg-def",
        "bg-async",
        "celery",
        "bg-def-2",
        "bg-async-2",
        "celery-2",
    ]
    assert [c.label for c in configs] == [
        "BackgroundTasks, def",
        "BackgroundTasks, async def",
        "Celery",
        "BackgroundTasks, def, 2 processes",
        "BackgroundTasks, async def, 2 processes",
        "Celery, 2 processes",
    ]


def test_every_implementation_runs_its_heavy_route_and_the_async_one_where_it_serves_it() -> None:
    for impl in ALL:
        routes = routes_of(impl)
        assert routes[0] == HEAVY
        # The async form is a task on the API's own event loop: only where it holds them.
        if HEAVY_ASYNC in routes:
            assert IMPLEMENTATIONS[impl].delivery == Delivery.in_process
    keys = [c.key for c in configs_for(ALL, [1, 3])]
    assert "taskiq" in keys and "taskiq-3" in keys
    assert len(keys) == len(set(keys))


def test_a_worker_whose_concurrency_is_not_processes_is_not_labelled_processes() -> None:
    [config] = configs_for((Implementation.taskiq,), [2])
    assert config.label == "taskiq, 2 at once"


def test_configs_are_picked_by_key_and_an_unknown_one_is_refused() -> None:
    configs = configs_for(ALL, [1, 2])
    assert [c.key for c in pick(configs, "celery,bg-def")] == ["bg-def", "celery"]
    assert pick(configs, None) == configs
    with pytest.raises(SystemExit, match="nope"):
        pick(configs, "bg-def,nope")


def test_the_notes_say_what_each_implementations_processes_are() -> None:
    assert processes_text(["bg", "celery"]) == (
        "uvicorn workers (BackgroundTasks) or Celery pool processes"
    )
    assert processes_text(["bg", "celery", "taskiq"]).endswith(
        "or taskiq's tasks at once (its worker's concurrency)"
    )
