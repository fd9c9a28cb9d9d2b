"""The work both sides call (``shared.work``): idempotent per task id."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared import work
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


def test_markers_older_than_the_retention_are_swept_within_a_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log.txt"
    ids = [f"t-{i}" for i in range(600)]  # every one of the 256 marker directories
    for task_id in ids:
        write_log("x", task_id=task_id, log_file=log)
    markers = [p for p in (tmp_path / "log.txt.index").rglob("*") if p.is_file()]
    assert len(markers) == len(ids)
    now = time.time()
    old = now - 120
    young = now + 30  # still inside the retention when the simulated minute ends
    for i, marker in enumerate(markers):
        os.utime(marker, (old, old) if i < 300 else (young, young))
    # A clock the sweep reads: 60 s of retention, a new directory every 60/256 s.
    clock = [now]
    monkeypatch.setattr(work, "time", SimpleNamespace(time=lambda: clock[0]))
    work._sweeps.clear()
    for i in range(256):
        if i % 64 == 0:
            work._sweeps.clear()  # a new process now and then: the clock, not it, decides
        write_log("y", task_id=f"new-{i}", log_file=log, retention=60)
        clock[0] += 60 / 256
    left = {p for p in (tmp_path / "log.txt.index").rglob("*") if p.is_file()}
    assert not left & set(markers[:300]), "an expired marker survived a retention"
    assert set(markers[300:]) <= left, "a marker inside the retention was swept"
    # A write with no retention (0: for ever) sweeps nothing.
    marker = markers[300]
    os.utime(marker, (old, old))
    work._sweeps.clear()
    write_log("z", task_id="keep", log_file=log)
    assert marker.exists()
