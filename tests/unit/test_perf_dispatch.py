"""The dispatch experiment's pure parts: which implementations it measures (those
that hand their tasks to a broker, each with the bench its own package declares),
and its report, of one implementation or several, in the shape written before the
experiment iterated over the declaration too. No process, no broker."""

from __future__ import annotations

from typing import Any

import pytest

from experiments.perf import dispatch_measure
from experiments.reporting import dispatch
from shared.services import IMPLEMENTATIONS, Delivery, Implementation

BROKERED = [i for i, s in IMPLEMENTATIONS.items() if s.delivery == Delivery.broker]


def test_every_implementation_that_publishes_to_a_broker_declares_its_bench() -> None:
    assert dispatch_measure.publishers() == tuple(BROKERED)
    for impl in IMPLEMENTATIONS:
        if impl not in BROKERED:
            # Held in process memory: nothing is published, nothing to time.
            assert impl not in dispatch_measure.publishers()


@pytest.mark.parametrize("impl", BROKERED)
def test_a_bench_names_its_floor_its_publish_and_the_client_it_builds(
    impl: Implementation,
) -> None:
    module = dispatch_measure.bench_module(impl)
    assert module is not None
    assert module.FLOOR != module.PROFILED
    assert callable(module.redis_bench)
    # The class whose constructions the profile counts is one that exists.
    assert isinstance(dispatch_measure._client_class(module.CLIENT_CLASS), type)
    words = module.describe(entry(impl, module.FLOOR, module.PROFILED))
    assert words.endswith(".") and "2 new " in words


def stats(p50: float) -> dict[str, float]:
    return {"n": 100, "p50": p50, "p95": p50, "p99": p50, "max": p50, "mean": p50,
            "client_cpu_us": p50 / 2, "redis_commands": 1.0}  # fmt: skip


def entry(impl: Implementation, floor: str, profiled: str) -> dict[str, Any]:
    """A measured entry with the floor at 100 µs and the publish at 400 µs."""
    variants = {floor: stats(100.0), profiled: stats(400.0)}
    return {
        "title": IMPLEMENTATIONS[impl].title,
        "floor": floor,
        "profiled": profiled,
        "message_bytes": 900,
        "calls": 300,
        "variants": variants,
        "commands": {name: {floor: 1.0} for name in variants},
        "profile": [{"where": "redis", "share": 0.5, "us_per_call": 100.0}],
        "top_functions": [{"function": "f", "share": 0.2, "calls_per_send": 1.0}],
        "redis_clients_per_call": 2.0,
        "redis_client_construction_us": 50.0,
        "ratios": {name: {"p50": v["p50"] / 100.0, "mean": 1.0} for name, v in variants.items()},
        "targets": [
            {"target": f"{profiled} p50 ≤ 3× {floor.upper()} p50", "measured": 4.0, "met": False}
        ],
    }


def report(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "calls": 300,
        "implementations": entries,
        "target": "local",
        "conditions": {"loadavg_1m": 0.5, "loadavg_5m": 0.5, "cpus": 2},
    }


@pytest.mark.parametrize("impl", BROKERED)
def test_a_report_from_before_the_entries_renders_as_its_implementations_entry(
    impl: Implementation,
) -> None:
    module = dispatch_measure.bench_module(impl)
    assert module is not None
    new = entry(impl, module.FLOOR, module.PROFILED)
    old = {key: value for key, value in new.items() if key not in ("title", "floor", "profiled")}
    old["redis_clients_per_send_task"] = old.pop("redis_clients_per_call")
    data = report({})
    del data["implementations"]
    data.update(old)
    assert list(dispatch.entries(data)) == [impl.value]
    assert dispatch.render(data) == dispatch.render(report({impl.value: new}))


def test_a_report_of_several_implementations_shows_each_against_its_own_floor() -> None:
    entries: dict[str, dict[str, Any]] = {}
    for impl in BROKERED:
        module = dispatch_measure.bench_module(impl)
        assert module is not None
        entries[impl.value] = entry(impl, module.FLOOR, module.PROFILED)
    text = dispatch.render(report(entries))
    for value, e in entries.items():
        assert f"**{e['title']}**\n\n| variant |" in text, value
        assert f"| p50 / {e['floor'].upper()} |" in text
        assert f"Where `{e['profiled']}`'s own time goes" in text
    assert text.endswith("Load average at the start: 0.5.")
    assert text.count("Load average") == 1


def test_a_report_whose_variants_no_bench_declares_is_refused() -> None:
    data: dict[str, Any] = {"variants": {"write": {}, "publish": {}}, "conditions": {}}
    with pytest.raises(ValueError, match="no bench declares"):
        dispatch.entries(data)
