"""The capacity and latency experiments' pure parts: each implementation's ladder as
its app declares it, the rows and keys built from the declaration, the ratios and
targets, the renderers and the decision guide's line. No process: the apps'
OpenAPI documents and hand-made reports only."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from experiments.perf import capacity, latency
from experiments.reporting import capacity as capacity_drawing
from experiments.reporting import decision
from experiments.reporting import latency as latency_report
from shared.services import IMPLEMENTATIONS, Delivery, Implementation
from shared.settings import explicit_settings


def document(impl: Implementation) -> dict[str, Any]:
    module = importlib.import_module(f"{IMPLEMENTATIONS[impl].package}.main")
    doc: dict[str, Any] = module.create_app(explicit_settings(experiment_routes=True)).openapi()
    return doc


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_a_ladder_is_bare_then_the_apps_own_rungs_in_order_then_the_route(
    impl: Implementation,
) -> None:
    doc = document(impl)
    rungs = capacity.ladder(doc)
    declared = [p.split("/")[2] for p in doc["paths"] if p.startswith("/capacity/")]
    assert [r.name for r in rungs] == ["bare", *declared, "default"]
    assert rungs[0] == capacity.BARE and rungs[-1] == capacity.ROUTE
    for rung in rungs[1:-1]:
        # Labelled with the route's own description, and reached at its path.
        description = doc["paths"][rung.path.replace("{e}", "{email}")]["post"]["description"]
        assert rung.label == description.rstrip(".")


def test_taskiqs_ladder_reaches_from_the_floor_to_its_route() -> None:
    names = [r.name for r in capacity.ladder(document(Implementation.taskiq))]
    assert names == ["bare", "floor", "stock", "publish", "default"]


def test_the_sent_event_switch_is_found_by_its_settings_name() -> None:
    for impl in IMPLEMENTATIONS:
        setting = capacity.sent_event_setting(impl)
        assert setting is None or setting == f"{impl}_send_sent_event"
    assert capacity.sent_event_setting(Implementation.celery) == "celery_send_sent_event"
    assert capacity.sent_event_setting(Implementation.taskiq) is None


def summary(per_s: float, cpu_us: float | None = 100.0) -> dict[str, Any]:
    return {"requests": 10, "errors": 0, "per_s": per_s, "p50_ms": 1.0, "p99_ms": 2.0,
            "cpu_us": cpu_us, "drain_s": 0.0}  # fmt: skip


def ladder_data(impl: str, rungs: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {
        "implementation": impl,
        "title": IMPLEMENTATIONS[Implementation(impl)].title,
        "broker": None,
        "sent_events": None,
        "rungs": {name: f"label of {name}" for name in rungs},
        "levels": {"4": {name: summary(v) for name, v in rungs.items()}},
        **extra,
    }


def capacity_report() -> dict[str, Any]:
    ladders = [
        ladder_data("bg", {"bare": 400.0, "default": 100.0}),
        ladder_data(
            "celery",
            {"bare": 400.0, "floor": 200.0, "stock": 100.0, "stock-events": 50.0, "default": 50.0},
            broker="redis",
            sent_events=True,
        ),
        ladder_data("taskiq", {"bare": 400.0, "floor": 300.0, "stock": 150.0, "default": 75.0}),
    ]
    return {
        "config": {"rounds": 1, "seconds_per_slice": 0.5},
        "runs": [{"broker": "redis", "processes": 1, "switched": False, "ladders": ladders}],
        "cross_check": None,
    }


def test_the_capacity_tables_compare_each_ladder_with_its_own_references() -> None:
    data = capacity_report()
    [bg, celery, taskiq] = data["runs"][0]["ladders"]
    # With its sent events on, the stock rung to compare with is the one with events.
    assert [row[5] for row in capacity_drawing.rows(celery, "4")] == [8.0, 4.0, 2.0, 1.0, 1.0]
    assert [row[6] for row in capacity_drawing.rows(taskiq, "4")] == [4 / 3, 1.0, 0.5, 0.25]
    # No floor, no stock: nothing to compare with.
    assert {(row[5], row[6]) for row in capacity_drawing.rows(bg, "4")} == {("—", "—")}
    text = capacity_drawing.render(data)
    assert "**BackgroundTasks** 1 process, 4 connections\n" in text
    assert "**Celery** on redis, 1 process, 4 connections, the project's sent events on" in text
    assert "**taskiq** 1 process, 4 connections\n" in text
    assert "the Celery and taskiq APIs only hand over" in text


def test_the_decision_guide_names_every_measured_hand_over(tmp_path: Path) -> None:
    (tmp_path / "capacity.json").write_text(json.dumps(capacity_report()))
    line = decision._capacity(tmp_path)
    # (default - bare) / 2 tasks, of the API's CPU: 0 here; the route's req/s.
    for ladder in capacity_report()["runs"][0]["ladders"]:
        assert IMPLEMENTATIONS[Implementation(ladder["implementation"])].title in line
    assert "BackgroundTasks 0 µs (the work included), 100/s" in line
    assert "Celery on Redis 0 µs, 50/s; taskiq 0 µs, 75/s" in line


def raw_segments(
    impls: list[Implementation], ms: dict[str, float]
) -> dict[int, dict[latency.Mode, dict[str, Any]]]:
    modes = latency.modes_for(impls, impls[0])
    return {
        level: {
            m: {
                "latencies": [ms[m.variant] / 1000] * 5,
                "errors": 0,
                "client_cpu": 0.01,
                "count": 5,
            }
            for m in modes
        }
        for level in (1, 4)
    }


def test_latency_keys_and_rows_come_from_the_declaration() -> None:
    impls = list(IMPLEMENTATIONS)
    ms = {"bare": 2.0, "route": 3.0, "no ledger": 2.5, "inline": 60.0}
    data = latency.analyse(raw_segments(impls, ms), {"delay": 0.05, "rounds": 1})
    assert list(data["implementations"]) == [i.value for i in impls]
    for impl, entry in data["implementations"].items():
        assert entry["title"] == IMPLEMENTATIONS[Implementation(impl)].title
        assert list(entry["levels"]["1"]) == list(latency_report.VARIANTS)
        r = entry["ratios"]["4"]
        assert r["route/bare p50"] == pytest.approx(1.5)
        assert r["route/no ledger p50"] == pytest.approx(1.2)
    assert data["inline"]["implementation"] == impls[0].value
    assert data["inline"]["p50/delay"]["1"] == pytest.approx(1.2)
    # Each implementation's target is its delivery's; inline's comes last.
    for impl in impls:
        limit = latency_report.TARGETS[IMPLEMENTATIONS[impl].delivery]
        wanted = f"{IMPLEMENTATIONS[impl].title} p50 ≤ {limit}× bare (every level)"
        [target] = [t for t in data["targets"] if t["target"] == wanted]
        assert target["met"] is (limit >= 1.5)
    assert data["targets"][-1]["target"].startswith("inline")
    text = latency_report.render({**data, "conditions": {"cpus": 2, "loadavg_1m": 0.5}})
    for impl in impls:
        assert f"| 1 | {IMPLEMENTATIONS[impl].title} | the route | 5 |" in text
    assert "| 1 | BackgroundTasks | inline (the work before answering) | 5 |" in text


def test_a_mode_that_did_not_run_is_a_nan_ratio_and_no_target() -> None:
    [impl] = [i for i, s in IMPLEMENTATIONS.items() if s.delivery == Delivery.broker][:1]
    raw = raw_segments([impl], {"bare": 2.0, "route": 3.0, "no ledger": 2.5, "inline": 9.0})
    for modes in raw.values():
        del modes[latency.Mode(impl, latency_report.NO_LEDGER)]
        del modes[latency.Mode(impl, latency_report.INLINE)]
    data = latency.analyse(raw, {"delay": 0.05, "rounds": 1})
    assert math.isnan(data["implementations"][impl.value]["ratios"]["1"]["no ledger/bare p50"])
    assert data["inline"] is None
    assert [t["target"] for t in data["targets"]] == [
        f"{IMPLEMENTATIONS[impl].title} p50 ≤ 1.5× bare (every level)"
    ]
