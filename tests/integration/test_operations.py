"""Safe to leave running, against real processes: experiment routes only on request,
a ledger that forgets, a full Redis that is a 503 (not a crash), readiness that
names what failed, and production refusing a placeholder secret at start."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import redis

from celery_app.beat_health import age
from celery_app.beat_health import main as beat_health_main
from harness.local import LocalStack
from harness.ports import free_port
from harness.procs import wait_until
from shared.ledger import Ledger, connect
from shared.ledger_layout import INDEX_KEY, TASK_KEY
from shared.models import Implementation
from shared.settings import Retention
from tests.integration.conftest import StackFactory, log_lines, wait_for_state

pytestmark = pytest.mark.slow

ITEM = {"name": "x", "price": 1}


def admin(stack: LocalStack) -> redis.Redis:
    return redis.Redis.from_url(stack.settings.redis_url, socket_timeout=5, decode_responses=True)


@pytest.mark.parametrize("mounted", [False, True])
def test_experiment_routes_are_mounted_only_on_request(
    make_stack: StackFactory, mounted: bool
) -> None:
    stack = make_stack(experiment_routes=mounted)
    stack.start_all(("redis", "bg-api", "celery-api"))
    paths = set(httpx.get(f"{stack.url('bg')}/openapi.json", timeout=10).json()["paths"])
    assert ("/mechanics/blocking-async-task" in paths) is mounted
    r = httpx.post(f"{stack.url('bg')}/mechanics/blocking-async-task?seconds=0", timeout=10)
    assert (r.status_code != 404) is mounted, r.text
    paths = set(httpx.get(f"{stack.url('celery')}/openapi.json", timeout=10).json()["paths"])
    assert any(p.startswith("/capacity/") for p in paths) is mounted
    assert "/items/" in paths and "/ready" in paths


def test_beat_marks_each_task_it_sends_where_its_healthcheck_looks(
    make_stack: StackFactory,
) -> None:
    # The mark, not the shelve: with dbm.ndbm (Debian's python3) the shelve's file
    # is written only on close, and a healthcheck reading it failed a healthy Beat.
    stack = make_stack(beat_interval_seconds=1)
    stack.start_all(("redis", "beat"))
    schedule = stack.workdir / "celerybeat-schedule"
    marks: list[float] = []

    def another_mark() -> bool:
        found = age(schedule)
        if found is not None and (not marks or time.time() - found > marks[-1]):
            marks.append(time.time() - found)
        return len(marks) >= 4

    wait_until(another_mark, 60, "Beat's mark touched at start and on three sends", 0.1)
    assert beat_health_main([str(schedule)]) == 0


def test_a_finished_task_is_forgotten_after_the_retention(make_stack: StackFactory) -> None:
    stack = make_stack(ledger_retention_seconds=2, ledger_unfinished_retention_seconds=60)
    stack.start_all(("redis", "bg-api", "celery-api"))
    r = admin(stack)
    # Queued, not run (no worker yet): kept up to the unfinished bound.
    queued = httpx.post(f"{stack.url('celery')}/items/", json=ITEM, timeout=10).json()["task_ids"][
        0
    ]
    assert 2 < r.ttl(TASK_KEY.format(queued)) <= 60
    stack.start("worker")
    ids = [queued]
    ids += httpx.post(f"{stack.url('bg')}/items/", json=ITEM, timeout=10).json()["task_ids"]
    for task_id in ids:
        wait_for_state(stack, task_id, {"succeeded"}, timeout=60)
        assert 0 < r.ttl(TASK_KEY.format(task_id)) <= 2
    wait_until(
        lambda: not any(r.exists(TASK_KEY.format(t)) for t in ids), 30, "the records to expire"
    )
    for url, task_id in ((stack.url("celery"), ids[0]), (stack.url("bg"), ids[1])):
        got = httpx.get(f"{url}/tasks/{task_id}", timeout=10)
        assert got.status_code == 404 and "forgotten after the retention" in got.json()["detail"]
        assert log_lines(stack, task_id)  # the effect stays: only the bookkeeping goes


def test_the_index_drops_entries_whose_records_have_expired_either_way(
    make_stack: StackFactory,
) -> None:
    stack = make_stack()
    stack.start("redis")
    r = admin(stack)
    index = INDEX_KEY.format(Implementation.celery.value)
    r.zadd(index, {"old": time.time() - 100, "recent": time.time() - 1})
    ledger = Ledger(
        connect(stack.settings.redis_url), Implementation.celery, retention=Retention(2, 3)
    )
    [new] = ledger.record_new("log")
    # Older than both retentions together: its record is gone whatever its fate.
    assert set(r.zrange(index, 0, -1)) == {"recent", new}
    assert 0 < r.ttl(TASK_KEY.format(new)) <= 3


def test_a_full_redis_is_a_503_and_both_apis_keep_serving(make_stack: StackFactory) -> None:
    stack = make_stack()
    stack.start_all(("redis", "bg-api", "celery-api"))
    r = admin(stack)
    # What production sets (docker-compose.prod.yml): a bound, and no eviction.
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", used + 2 * 1024 * 1024)
    filler = "x" * 65536
    with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
        for i in range(1000):  # 64 MB at most: full long before
            r.set(f"filler:{i}", filler)

    got = httpx.post(f"{stack.url('celery')}/items/", json=ITEM, timeout=10)
    assert got.status_code == 503, got.text
    # The ledger and the broker are this one Redis: whichever write comes first is refused.
    assert got.json()["dependency"] in ("ledger", "broker") and "Retry-After" in got.headers
    # BackgroundTasks needs no Redis to do its work: accepted, done, unrecorded.
    got = httpx.post(f"{stack.url('bg')}/items/", json=ITEM, timeout=10)
    assert got.status_code == 202, got.text
    [task_id] = got.json()["task_ids"]
    wait_until(lambda: log_lines(stack, task_id), 20, "bg's line with Redis full")
    for url in (stack.url("bg"), stack.url("celery")):
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    assert "maxmemory" in stack.output("celery-api")  # the reason: in the log only

    # Room again: accepted again, no restart.
    r.delete(*[f"filler:{i}" for i in range(1000)])
    assert httpx.post(f"{stack.url('celery')}/items/", json=ITEM, timeout=10).status_code == 202


def test_ready_names_the_broker_that_does_not_answer(make_stack: StackFactory) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack = make_stack(celery_broker_url=dead)
    stack.start_all(("redis", "bg-api", "celery-api"))
    got = httpx.get(f"{stack.url('celery')}/ready", timeout=15)
    assert got.status_code == 503 and got.json()["dependency"] == "broker", got.text
    assert int(got.headers["Retry-After"]) > 0
    assert httpx.get(f"{stack.url('celery')}/health", timeout=10).status_code == 200
    got = httpx.post(f"{stack.url('celery')}/items/", json=ITEM, timeout=15)
    assert got.status_code == 503 and got.json() == {
        "detail": "broker unavailable, nothing was queued",
        "dependency": "broker",
    }
    assert dead.split("//")[1].split("/")[0] not in got.text
    # BackgroundTasks has no broker: ready once its ledger answers.
    got = httpx.get(f"{stack.url('bg')}/ready", timeout=10)
    assert got.status_code == 200 and got.json()["checked"] == ["ledger"], got.text


SECRET = "s3cret-value-42"


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (
            ["uvicorn", "fastapi_bg.main:app", "--port", "{port}"],
            {"REDIS_URL": "redis://:change-me@127.0.0.1:{port}/0"},
            "REDIS_URL holds the development default",
        ),
        (
            ["uvicorn", "celery_app.main:app", "--port", "{port}"],
            {"REDIS_URL": "redis://127.0.0.1:{port}/0"},
            "REDIS_URL has no password",
        ),
        (
            ["celery", "-A", "celery_app.worker", "worker", "--pool=solo"],
            {"CELERY_BROKER_URL": "amqp://celery:change-me@127.0.0.1:{port}//"},
            "CELERY_BROKER_URL holds the development default",
        ),
        (
            [
                "taskiq",
                "worker",
                "taskiq_app.worker:broker",
                "taskiq_app.tasks",
                "--max-fails",
                "3",
            ],
            {"TASKIQ_BROKER_URL": "redis://:change-me@127.0.0.1:{port}/0"},
            "TASKIQ_BROKER_URL holds the development default",
        ),
        (
            ["celery", "-A", "celery_app.worker", "flower", "--port={port}"],
            {"FLOWER_BASIC_AUTH": "admin:change-me"},
            "FLOWER_BASIC_AUTH holds the development default",
        ),
    ],
    ids=["bg-api", "celery-api", "worker", "taskiq-worker", "flower"],
)
def test_production_refuses_to_start_with_a_placeholder_secret(
    argv: list[str], env: dict[str, str], named: str, make_stack: StackFactory
) -> None:
    stack = make_stack()  # for its clean environment only: nothing is started
    port = free_port()
    environment = {
        **stack.process_env(),
        "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:{port}/0",
        **{k: v.format(port=port) for k, v in env.items()},
        "ENVIRONMENT": "production",
    }
    done = subprocess.run(
        [sys.executable, "-m", *(a.format(port=port) for a in argv)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,  # killed (by PID) past it
        check=False,
    )
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert named in said, said
    assert SECRET not in said
