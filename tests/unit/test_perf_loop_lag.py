"""The loop-lag and threadpool experiments' pure parts: which implementations they
measure (chosen from the declaration, by where their tasks run), whose APIs serve
the mechanics, and the reports, of one implementation or several, in the shape
written before the experiments iterated over the declaration too. No process."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from experiments.perf import loop_lag, threadpool
from experiments.reporting import loop_lag as loop_lag_report
from experiments.reporting import threadpool as threadpool_report
from shared.services import IMPLEMENTATIONS, Delivery, Implementation
from shared.settings import explicit_settings

CONDITIONS = {"loadavg_1m": 0.5, "loadavg_5m": 0.5, "cpus": 2}


def document(impl: Implementation) -> dict[str, Any]:
    module = importlib.import_module(f"{IMPLEMENTATIONS[impl].package}.main")
    doc: dict[str, Any] = module.create_app(explicit_settings(experiment_routes=True)).openapi()
    return doc


def test_only_the_implementations_that_hold_their_tasks_in_the_api_are_measured() -> None:
    held = loop_lag.held_in_process()
    assert held, "no declared implementation holds its tasks in its API's process"
    assert all(IMPLEMENTATIONS[i].delivery == Delivery.in_process for i in held)
    assert set(IMPLEMENTATIONS) - set(held) == {
        i for i, s in IMPLEMENTATIONS.items() if s.delivery != Delivery.in_process
    }


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_each_api_that_holds_its_tasks_serves_every_mechanics_variant(
    impl: Implementation,
) -> None:
    serves = loop_lag.serves_mechanics(document(impl))
    # What the experiments measure must be there; a broker's API has nothing to show.
    assert serves == (impl in loop_lag.held_in_process()), impl


def variant(lag_p99: float, lag_max: float) -> dict[str, Any]:
    return {
        "probes": 10,
        "errors": 0,
        "scheduled_at_s": 0.3,
        "lag_ms": {"p50": 0.1, "p99": lag_p99, "max": lag_max},
        "ran_on_loop_thread": "true",
        "thread": "MainThread",
        "timeline": [[0.0, 1.0], [0.005, 2.0]],
    }


def loop_lag_entry(title: str, idle_p50: float) -> dict[str, Any]:
    variants = {
        v: variant(1.0, 1000.0 if v == loop_lag_report.BLOCKING else 2.0) for v in loop_lag.VARIANTS
    }
    return {
        "title": title,
        "idle_ms": {"p50": idle_p50, "p99": 2.0, "probes": 10},
        "variants": variants,
    }


def loop_lag_report_of(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    targets = [
        t
        for e in entries.values()
        for t in loop_lag._targets(e["variants"], 1.0, e["title"] if len(entries) > 1 else None)
    ]
    return {
        "config": {"seconds": 1.0, "probe_every_ms": 5.0, "lead_in_s": 0.3},
        "implementations": entries,
        "targets": targets,
        "target": "local",
        "conditions": CONDITIONS,
    }


def test_a_loop_lag_report_of_one_implementation_renders_as_the_report_before_it() -> None:
    [impl] = loop_lag.held_in_process()[:1]
    entry = loop_lag_entry(IMPLEMENTATIONS[impl].title, 1.1)
    data = loop_lag_report_of({impl.value: entry})
    before = {**data, "idle_ms": entry["idle_ms"], "variants": entry["variants"]}
    del before["implementations"]
    assert loop_lag_report.render(data) == loop_lag_report.render(before)
    text = loop_lag_report.render(data)
    assert "idle median (1.10 ms; idle p99 2.00 ms, 10 probes)" in text
    assert "**" not in text  # one implementation: no heading
    # The blocking variant is held to the block, the others to the lag target.
    targets = {t["target"]: t["met"] for t in data["targets"]}
    assert targets[f"{loop_lag_report.BLOCKING}: max lag ≈ the block (1 s)"] is True
    assert targets[f"sync-task: lag p99 ≤ {loop_lag.TARGET_MS:g} ms"] is True


def test_a_loop_lag_report_of_several_implementations_names_each_one() -> None:
    data = loop_lag_report_of(
        {"one": loop_lag_entry("First", 1.0), "two": loop_lag_entry("Second", 3.0)}
    )
    text = loop_lag_report.render(data)
    assert "**First**\n\n| task |" in text and "**Second**\n\n| task |" in text
    assert "(First: 1.00 ms; idle p99 2.00 ms, 10 probes; Second: 3.00 ms;" in text
    assert f"| Second, {loop_lag_report.BLOCKING}: max lag ≈ the block (1 s) |" in text


def scenario(tokens: int, sync_p50: float) -> dict[str, Any]:
    ms = {"n": 5, "p50": sync_p50, "p95": sync_p50, "p99": sync_p50, "max": sync_p50,
          "mean": sync_p50}  # fmt: skip
    return {
        "tasks": 4,
        "scheduled": 4,
        "finished": 4,
        "tasks_span_s": 1.0,
        "schedule_ms": ms,
        "sync_endpoint_ms": ms,
        "async_endpoint_ms": ms,
        "probe_errors": 0,
        "sync_timeline": [[0.0, sync_p50]],
        "threadpool_tokens": tokens,
    }


def threadpool_entry(title: str) -> dict[str, Any]:
    scenarios = {
        name: scenario(needs or threadpool.DEFAULT_TOKENS, 900.0 if "sync" in name else 3.0)
        for name, _, needs in threadpool.plan(44, 84)
    }
    return {"title": title, "scenarios": scenarios, "ratios": threadpool.ratios_of(scenarios, 1.0)}


def threadpool_report_of(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "config": {
            "tasks": 44,
            "seconds": 1.0,
            "probe_every_ms": 20.0,
            "sync_endpoint": f"GET {threadpool.SYNC_PATH}",
            "async_endpoint": f"GET {threadpool.ASYNC_PATH}",
        },
        "implementations": entries,
        "target": "local",
        "conditions": CONDITIONS,
    }


def test_the_threadpool_plan_starves_the_default_limiter_then_raises_it() -> None:
    assert threadpool.plan(44, 84) == [
        ("idle", None, None),
        ("44 sync tasks", "sync-task", None),
        ("44 async tasks", "async-task", None),
        ("44 sync tasks, THREADPOOL_TOKENS=84", "sync-task", 84),
    ]
    ratios = threadpool_entry("t")["ratios"]
    assert ratios["44 sync tasks"]["sync p50 / idle"] == 300.0


def test_a_threadpool_report_of_one_implementation_renders_as_the_report_before_it() -> None:
    entry = threadpool_entry("Only")
    data = threadpool_report_of({"only": entry})
    before = {**data, "scenarios": entry["scenarios"], "ratios": entry["ratios"]}
    del before["implementations"]
    assert threadpool_report.render(data) == threadpool_report.render(before)
    assert "**" not in threadpool_report.render(data)


def test_a_threadpool_report_of_several_implementations_names_each_one() -> None:
    text = threadpool_report.render(
        threadpool_report_of({"a": threadpool_entry("First"), "b": threadpool_entry("Second")})
    )
    assert text.count("| scenario |") == 2
    assert "**First**\n\n| scenario |" in text and "**Second**\n\n| scenario |" in text
