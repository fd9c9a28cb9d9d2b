"""The lab's fail toggle: it restarts what runs each column's work with the first
attempts of every notification failing; Celery retries them, BackgroundTasks
records the failure and skips the task behind it. A lab of its own (the restarts
take a while), beside the other lab tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.procs import wait_until
from tests.integration.test_lab import RunningLab, running_lab

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lab-fail")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory.mktemp("lab-fail")) as running:
        yield running


def test_fail_toggle_retries_on_celery_and_skips_on_bg(lab: RunningLab) -> None:
    httpx.post(lab.url + "/api/reset", timeout=10).raise_for_status()
    for impl, service in (("bg", "bg-api"), ("celery", "worker")):
        r = lab.act(impl, "fail").json()
        assert r["status"] == "ok", r
        assert f"{service} restarted with NOTIFICATION_FAIL_FIRST_ATTEMPTS=2" in r["result"]
    columns = lab.state()["implementations"]
    assert columns["bg"]["fail_first"] == columns["celery"]["fail_first"] == 2
    try:
        for impl in ("bg", "celery"):
            assert lab.act(impl, "send", count=1).json()["status"] == "ok"

        def settled() -> dict[str, Any] | None:
            s = lab.state()["implementations"]
            done = s["celery"]["counters"]["succeeded"] == 1 and s["bg"]["counters"]["failed"] == 1
            return s if done else None

        columns = wait_until(settled, 60, "a retried Celery success and a failed BG task", 0.5)
        assert isinstance(columns, dict)
        celery = {t["kind"]: t for t in columns["celery"]["tasks"]}
        bg = {t["kind"]: t for t in columns["bg"]["tasks"]}
        # Celery: two transient failures, retried with backoff, third attempt succeeds.
        assert celery["notification"]["attempts"] == 3
        assert celery["notification"]["retries"] == 2
        # BackgroundTasks: no retry; and the log line after it in the request never runs.
        assert bg["notification"]["attempts"] == 1
        assert bg["log"]["state"] == "skipped"
        assert columns["bg"]["all"]["skipped"] == 1
    finally:
        for impl in ("bg", "celery"):
            assert lab.act(impl, "fail").json()["status"] == "ok"
    state = lab.state()
    columns = state["implementations"]
    assert columns["bg"]["fail_first"] == columns["celery"]["fail_first"] == 0
    fails = [e for e in state["events"] if e["action"] == "fail"]
    assert len(fails) == 4 and all(e["status"] == "ok" for e in fails)
