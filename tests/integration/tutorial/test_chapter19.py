"""Chapter 19's program (``examples/chapter19``), run as the chapter runs it:
``uvicorn main:app --reload`` in its folder, the chapter's two requests, then
``cat log.txt``."""

from __future__ import annotations

import time

import httpx
import pytest

from harness.procs import wait_until
from tests.integration.tutorial.conftest import Example


@pytest.mark.serial
def test_the_answer_comes_first_and_log_txt_gets_every_line(run_example: Example) -> None:
    app = run_example("chapter19")
    url = app.uvicorn()

    # curl -X POST "http://localhost:8000/items/" -H "Content-Type: application/json" \
    #   -d '{"name": "노트북", "price": 1500000}'
    r = httpx.post(f"{url}/items/", json={"name": "노트북", "price": 1500000}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "item created", "item": {"name": "노트북", "price": 1500000}}
    wait_until(lambda: "item created: 노트북" in app.log_txt(), 10, "the item's log line")

    # curl -X POST "http://localhost:8000/send-notification/user@example.com"
    started = time.monotonic()
    r = httpx.post(f"{url}/send-notification/user@example.com", timeout=10)
    answered = time.monotonic() - started
    assert r.status_code == 200, r.text
    # The notification sleeps 2 s; the answer did not wait for it.
    assert answered < 1.0, f"answered after {answered:.2f}s"
    assert "notification sent" not in app.log_txt()

    # cat log.txt: both tasks of the one request ran, one after the other, in order.
    wait_until(lambda: "scheduled for user@example.com" in app.log_txt(), 15, "both lines")
    lines = app.log_txt().splitlines()
    assert lines == [
        "item created: 노트북",
        "notification sent to user@example.com: welcome",
        "notification scheduled for user@example.com",
    ]
