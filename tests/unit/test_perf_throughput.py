"""The throughput experiment's plan and analysis, from the declaration alone (no process)."""

from __future__ import annotations

import math
from typing import Any

from experiments.perf.throughput import TARGET_RATIO, Phase, analyse, phases_for
from experiments.reporting.throughput import RELIABLE, STOCK, render
from shared.services import IMPLEMENTATIONS, Delivery, Implementation, stock_settings


def row(span: float, impl: Implementation, variant: str) -> dict[str, Any]:
    return {
        "implementation": impl.value,
        "variant": variant,
        "tasks": 10,
        "finished": 10,
        "failed": 0,
        "http_errors": 0,
        "dispatch_s": span / 2,
        "span_s": span,
        "worker_span_s": span,
        "tasks_per_s": 10 / span,
    }


def test_each_implementation_runs_as_set_and_as_shipped_where_they_differ() -> None:
    phases = phases_for(tuple(IMPLEMENTATIONS))
    for impl in IMPLEMENTATIONS:
        variants = [p.variant for p in phases if p.implementation == impl]
        assert variants == ([RELIABLE, STOCK] if stock_settings(impl) else [""])
    for p in phases:
        # Only the stock phase departs from the project's settings, with the declared ones.
        assert p.settings == (stock_settings(p.implementation) if p.variant == STOCK else {})
        # A worker apart from the API is measured alone too; an API that runs its tasks, not.
        spec = IMPLEMENTATIONS[p.implementation]
        assert p.drains == (spec.runs_the_work != spec.api)


def test_the_keys_of_the_chapters_two_stay_those_of_the_committed_report() -> None:
    keys = [p.key for p in phases_for((Implementation.bg, Implementation.celery))]
    assert keys == ["bg", "celery reliable", "celery stock"]


def test_every_stock_pair_gets_its_ratio_and_target_and_each_one_the_baseline_ratio() -> None:
    phases = phases_for(tuple(IMPLEMENTATIONS))
    spans = {p.key: 1.0 + i for i, p in enumerate(phases)}
    results = {p.key: row(spans[p.key], p.implementation, p.variant) for p in phases}
    drains = {p.key: row(spans[p.key], p.implementation, p.variant) for p in phases if p.drains}
    data = analyse(phases, results, drains)
    baseline = next(
        p.key for p in phases if IMPLEMENTATIONS[p.implementation].delivery == Delivery.in_process
    )
    stocked = [i for i in IMPLEMENTATIONS if stock_settings(i)]
    assert [t["target"] for t in data["targets"]] == [
        f"{Phase(i, RELIABLE).key} ≥ {TARGET_RATIO}× stock throughput" for i in stocked
    ]
    for impl in stocked:
        reliable, stock = Phase(impl, RELIABLE).key, Phase(impl, STOCK).key
        measured = data["ratios"][f"{reliable}/stock throughput"]
        assert math.isclose(measured, spans[stock] / spans[reliable])
        assert f"{reliable}/stock throughput, worker drain" in data["ratios"]
        assert f"{reliable}/{baseline} throughput" in data["ratios"]
        # A stock phase is compared with its own implementation only.
        assert f"{stock}/{baseline} throughput" not in data["ratios"]


def test_a_new_implementations_rows_and_stock_settings_are_rendered() -> None:
    phases = phases_for((Implementation.bg, Implementation.taskiq))
    results = {p.key: row(2.0, p.implementation, p.variant) for p in phases}
    drains = {p.key: row(1.0, p.implementation, p.variant) for p in phases if p.drains}
    data = {
        **analyse(phases, results, drains),
        "config": {
            "tasks": 10,
            "http_concurrency": 2,
            "worker_concurrency": 2,
            "worker_pools": {"taskiq": None},
            "stock": {"taskiq": stock_settings(Implementation.taskiq)},
        },
        "conditions": {"cpus": 2, "loadavg_1m": 0.5},
    }
    md = render(data)
    title = IMPLEMENTATIONS[Implementation.taskiq].title
    assert "| taskiq reliable |" in md and "| taskiq stock |" in md
    assert f"{title} worker: concurrency 2" in md
    for name in stock_settings(Implementation.taskiq):
        assert name.upper() in md
    assert f"({title}'s defaults)" in md
