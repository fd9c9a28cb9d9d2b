"""The lab against a stack whose Celery runs on RabbitMQ: it says so, it
shows and controls the broker, and a killed worker's task comes back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.procs import wait_until
from tests.integration.test_lab import RunningLab, running_lab

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lab-rabbitmq")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory.mktemp("lab-rabbitmq"), "--broker", "rabbitmq") as running:
        yield running


def test_the_page_says_which_broker_and_controls_it(lab: RunningLab) -> None:
    celery = lab.state()["implementations"]["celery"]
    assert celery["redelivery"]["broker"] == "rabbitmq"
    assert "RabbitMQ" in celery["about"]
    procs = {p["service"]: p for p in celery["processes"]}
    assert procs["rabbitmq"]["up"] and procs["redis"]["up"]  # the broker, and the ledger
    links = {x["label"]: x["url"] for x in celery["links"]}
    assert links["rabbitmq"].startswith("http://127.0.0.1:")
    assert celery["controls"]["rabbitmq"] == ["restart"]
    r = lab.act("celery", "restart", "rabbitmq").json()
    assert r["status"] == "ok" and "rabbitmq up again" in r["result"], r


def test_a_killed_workers_task_comes_back_on_rabbitmq(lab: RunningLab) -> None:
    lab.act("celery", "send", count=1)
    wait_until(lambda: lab.counters("celery")["running"] == 1, 30, "the notification running")
    assert lab.act("celery", "kill", "worker").json()["status"] == "ok"
    assert lab.act("celery", "restart", "worker").json()["status"] == "ok"

    def redelivered() -> bool:
        tasks = lab.state()["implementations"]["celery"]["tasks"]
        done = [t for t in tasks if t["kind"] == "notification" and t["state"] == "succeeded"]
        return bool(done) and done[-1]["executions"] == 2

    wait_until(redelivered, 60, "the notification redelivered and succeeded")
    assert lab.counters("celery")["lost"] == 0
