"""The scale experiment's arithmetic and its report's words, from the declaration."""

from __future__ import annotations

from typing import Any

from experiments.perf.scale import at_once
from experiments.perf.threadpool import DEFAULT_TOKENS
from experiments.reporting.scale import label_of, render
from shared.services import IMPLEMENTATIONS, Delivery, Implementation


def test_an_api_that_holds_its_tasks_runs_a_thread_pools_worth_per_process() -> None:
    for impl, spec in IMPLEMENTATIONS.items():
        per_process = DEFAULT_TOKENS if spec.delivery == Delivery.in_process else 1
        assert [at_once(impl, p) for p in (1, 2, 4)] == [per_process * p for p in (1, 2, 4)]


def test_each_implementations_processes_are_named_from_its_declared_commands() -> None:
    assert label_of("bg") == "BackgroundTasks (uvicorn workers)"
    assert label_of("celery") == "Celery (prefork pool processes)"
    assert label_of("taskiq") == "taskiq (tasks at once)"


def test_a_new_implementations_rows_are_rendered_with_its_own_words() -> None:
    def run(impl: Implementation, p: int) -> dict[str, Any]:
        return {
            "processes": p,
            "at_once": at_once(impl, p),
            "requests": 10,
            "done": 10,
            "http_errors": 0,
            "accepted_after_s": 0.1,
            "span_s": 1.0 / p,
            "per_s": 10.0 * p,
            "ideal_span_s": 0.5,
            "speedup": float(p),
        }

    impls = (Implementation.bg, Implementation.taskiq)
    data = {
        "config": {"requests": 10, "delay": 0.1, "http_concurrency": 4, "processes": [1, 2]},
        "runs": {i.value: {str(p): run(i, p) for p in (1, 2)} for i in impls},
        "conditions": {"cpus": 2},
    }
    md = render(data)
    assert md.count("| taskiq (tasks at once) |") == 2
    assert f"BackgroundTasks runs up to {DEFAULT_TOKENS} sync tasks per process" in md
    assert "taskiq's worker runs as many tasks at once as its concurrency" in md
    # No prefork pool measured: no word on the pools it could run instead.
    assert "gevent" not in md
