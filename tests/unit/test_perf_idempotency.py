"""The idempotency report, whichever implementations it measured: a row and a target
each, labelled with the implementation's value, and its title on the chart. No process."""

from __future__ import annotations

from typing import Any

from experiments.reporting import idempotency
from shared.services import IMPLEMENTATIONS


def run(lines: int, per_s: float) -> dict[str, Any]:
    return {"tasks": 30, "finished": 30, "failed": 0, "http_errors": 0, "tasks_per_s": per_s,
            "log_lines_before": lines, "log_bytes_before": lines * 90}  # fmt: skip


def test_every_measured_implementation_has_its_rows_and_its_target() -> None:
    sides = [impl.value for impl in IMPLEMENTATIONS]
    data = {
        "config": {"implementations": sides, "tasks": 30, "lines": 20000, "http_concurrency": 8},
        "runs": {side: {"0": run(0, 100.0), "20000": run(20000, 95.0)} for side in sides},
        "ratios": dict.fromkeys(sides, 0.95),
        "targets": [
            {"target": f"{side}: tasks/s ...", "measured": 0.95, "met": True} for side in sides
        ],
        "target": "local",
    }
    text = idempotency.render(data)
    for side in sides:
        assert f"| {side} | 0 |" in text and f"| {side} | 20,000 |" in text
        assert f"| {side}: tasks/s ... |" in text


def test_a_title_comes_from_the_declaration_and_an_undeclared_key_stays_itself() -> None:
    for impl, spec in IMPLEMENTATIONS.items():
        assert idempotency.title_of(impl.value) == spec.title
    assert idempotency.title_of("gone") == "gone"
