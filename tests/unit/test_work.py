"""The work both sides call (``shared.work``): idempotent per task id."""

from __future__ import annotations

from pathlib import Path

from shared.work import has_effect, write_log


def test_write_log_is_idempotent_per_task_id(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    assert write_log("first", task_id="t-1", log_file=log) is True
    assert write_log("again", task_id="t-1", log_file=log) is False
    assert write_log("other", task_id="t-2", log_file=log) is True
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "[t-1] first" in lines[0] and "[t-2] other" in lines[1]


def test_the_idempotency_check_reads_the_marker_not_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    assert write_log("first", task_id="t-1", log_file=log) is True
    assert has_effect(log, "t-1") and not has_effect(log, "t-2")
    # A marker whose offset holds another task's line (killed between the marker and
    # the line, someone else wrote there) reads as "not written": it is written again.
    log.write_text("")
    assert write_log("other", task_id="t-2", log_file=log) is True
    assert not has_effect(log, "t-1")
    assert write_log("again", task_id="t-1", log_file=log) is True
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [line.split()[1] for line in lines] == ["[t-2]", "[t-1]"]
