"""Chapter 19's program on Celery (``examples/chapter19_celery``), run as its
docstrings say: ``celery -A tasks worker --beat`` and ``uvicorn main:app
--reload`` in its folder, a real redis-server as the broker, the chapter's two
requests, then ``cat log.txt``. No eager mode: the worker runs every task."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from harness.ports import free_port
from harness.procs import wait_until
from harness.servers import RedisServer
from tests.integration.tutorial.conftest import BIN, Example


def test_a_worker_runs_the_tasks_retries_a_failure_and_beat_fires(
    run_example: Example, tmp_path: Path
) -> None:
    app = run_example("chapter19_celery")
    redis = RedisServer(free_port(), tmp_path)
    app.run("redis", *redis.argv())
    redis.wait_ready(app.procs[-1])
    env = {"REDIS_URL": redis.url, "BEAT_SECONDS": "1", "FAIL_FIRST": "1"}
    worker = app.run(
        "worker", str(BIN / "celery"), "-A", "tasks", "worker", "--beat", "--loglevel=INFO",
        "--concurrency", "2", env=env,
    )  # fmt: skip
    worker.wait_for_output(r"ready\.", 60)
    url = app.uvicorn(env)

    r = httpx.post(f"{url}/items/", json={"name": "노트북", "price": 1500000}, timeout=10)
    assert r.status_code == 202, r.text
    assert r.json()["message"] == "item created" and len(r.json()["task_ids"]) == 1
    wait_until(lambda: "item created: 노트북" in app.log_txt(), 15, "the item's log line")

    started = time.monotonic()
    r = httpx.post(f"{url}/send-notification/user@example.com", timeout=10)
    answered = time.monotonic() - started
    assert r.status_code == 202, r.text
    sent_id, logged_id = r.json()["task_ids"]
    assert answered < 1.0, f"answered after {answered:.2f}s"  # the notification takes 2 s

    # The first attempt fails (FAIL_FIRST=1) and is retried a second later: sent once.
    wait_until(lambda: "notification sent" in app.log_txt(), 30, "the retried notification")
    assert re.search(rf"send_notification\[{sent_id}\] retry", worker.output())
    lines = app.log_txt().splitlines()
    assert lines.count("notification sent to user@example.com: welcome") == 1
    assert "notification scheduled for user@example.com" in lines
    assert re.search(rf"write_log\[{logged_id}\] succeeded", worker.output())

    # Beat's one entry, every BEAT_SECONDS.
    wait_until(lambda: app.log_txt().count("beat heartbeat") >= 2, 15, "two beats")
