"""The performance experiments, each in a tiny configuration against real processes.

Each one must write its JSON, markdown and PNG, with the expected shape, and show
its qualitative result. No wall-clock thresholds: those are the report's targets
(a busy CI machine must not fail them); only comparisons between two measurements
of the same run, or against a duration the experiment itself configured (a task
that sleeps S seconds cannot answer in less than S).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments.perf.capacity import RUNGS
from tests.integration.conftest import experiment_report

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n"


def run_experiment(name: str, out: Path, *args: str) -> dict[str, Any]:
    data = experiment_report(name, out, *args)
    for suffix in ("json", "md", "png"):
        assert (out / f"{name}.{suffix}").is_file(), f"{name}.{suffix} missing"
    assert (out / f"{name}.png").read_bytes().startswith(PNG)
    md = (out / f"{name}.md").read_text()
    assert md.startswith(f"## {name}") and "|---|" in md and f"({name}.png)" in md
    assert data["machine"]["cpus"] and data["machine"]["versions"]["celery"]
    assert "loadavg_1m" in data["conditions"]
    return data


@pytest.mark.serial
def test_latency(tmp_path: Path) -> None:
    # A 0.2 s task: the "answered before the work" comparisons below keep a wide
    # margin even when a busy CI machine stalls a request for a while.
    data = run_experiment(
        "latency", tmp_path, "--quick", "--levels", "1", "2", "--requests", "12", "--delay", "0.2"
    )
    delay_ms = data["config"]["delay"] * 1000
    for level in ("1", "2"):
        stats = data["levels"][level]
        assert set(stats) == {
            "bare@bg",
            "bg",
            "bg-noledger",
            "bare@celery",
            "celery",
            "celery-noledger",
            "inline",
        }
        assert all(s["errors"] == 0 and s["n"] > 0 for s in stats.values())
        # Inline does the work before answering: never faster than the work itself.
        assert stats["inline"]["p50"] >= delay_ms
        # Background scheduling answers before the work is done.
        assert stats["bg"]["p50"] < delay_ms <= stats["inline"]["p50"]
        assert stats["celery"]["p50"] < stats["inline"]["p50"]
        assert set(data["ratios"][level]) >= {
            "bg/bare p50",
            "celery/bare p50",
            "bg/bg-noledger p50",
            "celery/celery-noledger p50",
        }
    assert [t["met"] for t in data["targets"]][-1] is True  # inline ≥ delay


def test_dispatch(tmp_path: Path) -> None:
    data = run_experiment("dispatch", tmp_path, "--quick", "--calls", "200")
    v = data["variants"]
    assert list(v) == ["lpush", "send_task, no sent-event", "send_task", "API schedule()"]
    # The raw LPUSH is one command; a publish is at least that LPUSH, plus the event.
    assert data["commands"]["lpush"] == {"lpush": 1.0}
    assert data["commands"]["send_task"].get("lpush") == 1.0
    assert data["commands"]["send_task"].get("publish") == 1.0
    assert "publish" not in data["commands"]["send_task, no sent-event"]
    # Building and routing a Celery message costs more than pushing bytes.
    assert v["send_task"]["client_cpu_us"] > v["lpush"]["client_cpu_us"]
    assert data["profile"] and data["top_functions"]


def test_throughput(tmp_path: Path) -> None:
    data = run_experiment("throughput", tmp_path, "--quick", "--tasks", "30")
    assert data["config"]["worker_concurrency"] == 2
    assert set(data["results"]) == {"bg", "celery reliable", "celery stock"}
    assert set(data["drain"]) == {"celery reliable", "celery stock"}
    for r in [*data["results"].values(), *data["drain"].values()]:
        assert r["finished"] == r["tasks"] == 30 and r["http_errors"] == 0
        assert r["tasks_per_s"] > 0
    assert {"reliable/stock throughput", "celery reliable/bg throughput"} <= set(data["ratios"])


@pytest.mark.serial
def test_loop_lag(tmp_path: Path) -> None:
    # A 1 s block: long enough that a scheduling hiccup of a busy CI machine (one
    # run saw 113 ms on a fix's p99 with a 0.3 s block) stays far below it.
    data = run_experiment("loop-lag", tmp_path, "--quick", "--seconds", "1.0")
    v = data["variants"]
    block_ms = 1000
    # Where each variant ran, as the task itself recorded it.
    assert v["sync-task"]["ran_on_loop_thread"] == "false"
    for name in ("async-task", "blocking-async-task", "to-thread-task"):
        assert v[name]["ran_on_loop_thread"] == "true"
    # time.sleep inside async def stalls every probe for about the block...
    blocking = v["blocking-async-task"]["lag_ms"]["max"]
    assert blocking >= 0.5 * block_ms
    # ...and the fixes do not: far below the blocking case.
    for name in ("sync-task", "async-task", "to-thread-task"):
        assert v[name]["lag_ms"]["p99"] * 3 < blocking, name


@pytest.mark.serial
def test_threadpool(tmp_path: Path) -> None:
    # One-second tasks: with half a second, the window the probes cover is mostly the
    # burst of 44 requests starting 44 threads on 2 cores, and the raised limit's p50
    # read 25-230 ms from run to run; with one second, 5-6 ms (starved: 820-890).
    data = run_experiment("threadpool", tmp_path, "--quick", "--tasks", "44", "--seconds", "1.0")
    sc = data["scenarios"]
    assert list(sc) == [
        "idle",
        "44 sync tasks",
        "44 async tasks",
        "44 sync tasks, THREADPOOL_TOKENS=84",
    ]
    assert all(s["finished"] == s["tasks"] for s in sc.values())
    starved = sc["44 sync tasks"]["sync_endpoint_ms"]
    # With every token held by a sleeping task, the sync endpoint waits for one...
    assert starved["max"] >= 0.5 * 1000
    # ...and either remedy takes that wait away.
    for remedy in ("44 async tasks", "44 sync tasks, THREADPOOL_TOKENS=84"):
        assert sc[remedy]["sync_endpoint_ms"]["p50"] * 3 < starved["p50"], remedy
    # The 44 sync tasks needed two waves through 40 tokens; with 84, one.
    assert (
        sc["44 sync tasks"]["tasks_span_s"]
        > sc["44 sync tasks, THREADPOOL_TOKENS=84"]["tasks_span_s"]
    )


def test_footprint(tmp_path: Path) -> None:
    data = run_experiment("footprint", tmp_path, "--quick", "--requests", "16")
    bg, celery = data["sides"]["bg"], data["sides"]["celery"]
    assert list(bg["processes"]) == ["bg-api"]
    assert list(celery["processes"]) == ["celery-api", "worker", "beat", "redis", "flower"]
    # The worker is its main process and its two prefork children.
    assert celery["processes"]["worker"]["idle"]["processes"] == 3
    # One process against five services: Celery needs more memory, idle and loaded.
    assert celery["idle_rss_mib"] > bg["idle_rss_mib"]
    assert celery["load_rss_mib"] > bg["load_rss_mib"]
    assert all(p["idle"]["rss"] > 0 for p in celery["processes"].values())


@pytest.mark.serial
def test_scale(tmp_path: Path) -> None:
    data = run_experiment("scale", tmp_path, "--quick", "--delay", "0.1")
    for side in ("celery", "bg"):
        runs = data["runs"][side]
        assert set(runs) == {"1", "2"}
        assert all(r["done"] == r["requests"] and r["http_errors"] == 0 for r in runs.values())
    # A sleeping notification holds a prefork process: two do them about twice as fast.
    celery = data["runs"]["celery"]
    assert celery["2"]["span_s"] < celery["1"]["span_s"]
    # BackgroundTasks runs 40 at once per process: one process beats one Celery process.
    assert data["runs"]["bg"]["1"]["per_s"] > celery["1"]["per_s"]


def test_idempotency(tmp_path: Path) -> None:
    data = run_experiment("idempotency", tmp_path, "--quick", "--tasks", "30")
    for side in ("bg", "celery"):
        runs = data["runs"][side]
        assert all(r["finished"] == r["tasks"] == 30 for r in runs.values())
        assert runs["20000"]["log_lines_before"] == 20000
        assert runs["20000"]["log_bytes_before"] > 0


@pytest.mark.serial
def test_capacity(tmp_path: Path) -> None:
    # Saturation is its subject: alone on the machine. No timing is asserted: the
    # ladder's numbers are the benchmark's (docs/measured.md, Capacity).
    data = run_experiment("capacity", tmp_path, "--quick", "--broker", "both")
    runs = data["runs"]
    assert {(r["broker"], r["processes"]) for r in runs} == {("redis", 1), ("rabbitmq", 1)}
    for run in runs:
        for level in run["levels"].values():
            sides = {"celery", "bg"} if run["broker"] == "redis" else {"celery"}
            assert set(level) == sides
            for side in sides:
                # Every rung, in order, answered without an error, at a rate above zero.
                assert list(level[side]) == [name for name, _ in RUNGS[side]]
                for rung in level[side].values():
                    assert rung["errors"] == 0 and rung["per_s"] > 0 and rung["requests"] > 0
                    assert rung["cpu_us"] is not None and rung["cpu_us"] > 0
