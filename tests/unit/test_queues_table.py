"""The table across every implementation: drawn from the declaration and the reports,
no process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.reporting import queues
from shared.services import IMPLEMENTATIONS, Implementation


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_every_implementation_says_each_claim_of_itself(impl: Implementation) -> None:
    said = queues.cells_of(IMPLEMENTATIONS[impl])
    assert set(queues.CLAIMS) <= set(said), set(queues.CLAIMS) - set(said)
    assert "runs twice" in said


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
def test_every_column_it_marks_is_a_column_of_the_table(impl: Implementation) -> None:
    from experiments.crash.scenario import COLUMNS

    marked = {s.column for s in queues.scenarios_of(IMPLEMENTATIONS[impl]) if s.column}
    assert marked <= set(COLUMNS)
    # Each implementation with a worker of its own is killed in the table.
    assert "api-kill" in marked


def test_a_crash_row_says_what_was_lost_parked_and_left_waiting() -> None:
    row = {
        "lost": 1,
        "submitted": 12,
        "abandoned": 2,
        "dead_lettered": 0,
        "summary": {"awaiting_redelivery": 1, "in_flight": 0},
        "window": 30.0,
        "redelivered_after": [5.25, 6.0],
    }
    assert queues.crash_result(row) == (
        "1 of 12 lost, 2 abandoned, 1 still waiting at 30 s, back after 5.2 s"
    )


def test_without_reports_every_measured_cell_says_so(tmp_path: Path) -> None:
    text = queues.render_from(tmp_path)
    header = text.splitlines()[0]
    assert all(spec.title in header for spec in IMPLEMENTATIONS.values())
    kill_row = next(line for line in text.splitlines() if "**API SIGKILL**" in line)
    assert kill_row.count(queues.NOT_MEASURED) == len(IMPLEMENTATIONS)


def test_a_measured_row_links_to_its_row_of_the_crash_table(tmp_path: Path) -> None:
    impl, spec = next(iter(IMPLEMENTATIONS.items()))
    key = next(s.key for s in queues.scenarios_of(spec) if s.column == "api-kill")
    row: dict[str, Any] = {"key": key, "implementation": impl.value, "broker": "", "status": "ok"}
    row |= {"lost": 3, "submitted": 4, "summary": {}, "redelivered_after": None}
    (tmp_path / "crash.json").write_text(json.dumps({"scenarios": [row]}))
    text = queues.render_from(tmp_path)
    assert f"[3 of 4 lost](docs/crash.md#crash-{key})" in text
