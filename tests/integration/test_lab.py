"""The lab (``python -m experiments lab``): its HTTP and SSE endpoints against the
real processes it starts (the browser's story is ``test_lab_browser``; a lab of
every implementation is ``test_lab_taskiq``).

One lab for the module, started through the real command line in a process group
of its own; it is stopped with SIGINT (the Ctrl-C path) and, should that fail,
every process it started is killed by PID (checked against its start time).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from harness.ports import free_port
from harness.procs import REPO_ROOT, Proc, kill_groups, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lab")]

# Short demo settings: a notification takes 4 s (time to kill it mid-run), a
# killed worker's message comes back 6 s after its delivery.
DEMO_ARGS = [
    "--notification-delay", "4",
    "--visibility-timeout", "6",
    "--restore-interval", "0.5",
    "--beat-interval", "3600",
]  # fmt: skip
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@dataclass
class RunningLab:
    url: str
    proc: Proc
    workdir: Path
    # Every process the lab was seen to start: pid -> create time (so a reused
    # PID is never mistaken for one of ours).
    children: dict[int, float] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        r = httpx.get(self.url + "/api/state", timeout=10)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def act(self, impl: str, action: str, service: str | None = None, **extra: Any) -> Any:
        body = {"implementation": impl, "action": action, "service": service, **extra}
        return httpx.post(self.url + "/api/actions", json=body, timeout=150)

    def note_children(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children():
                self.children[child.pid] = child.create_time()

    def report(self) -> str:
        """For a failing test: what the lab showed, and what its processes printed."""
        lines = []
        with contextlib.suppress(Exception):
            state = self.state()
            for impl, d in state["implementations"].items():
                lines.append(
                    f"{impl}: {d['counters']} {[(p['service'], p['up']) for p in d['processes']]}"
                )
                lines += [
                    f"  {t['short']} {t['kind']} {t['state']} att={t['attempts']} {t['note']}"
                    for t in d["tasks"]
                ]
            lines += [f"event: {e['label']} {e['status']} {e['result']}" for e in state["events"]]
        for out in sorted(self.workdir.glob("*.out")):
            lines.append(f"===== {out.name}\n{out.read_text(errors='replace')[-2500:]}")
        return "\n".join(lines)

    def counters(self, impl: str, key: str = "counters") -> dict[str, int]:
        counts: dict[str, int] = self.state()["implementations"][impl][key]
        return counts

    def processes(self, impl: str) -> dict[str, dict[str, Any]]:
        """A column's processes by service."""
        procs = self.state()["implementations"][impl]["processes"]
        return {p["service"]: p for p in procs}


def _all_up(state: dict[str, Any]) -> bool:
    return all(p["up"] for column in state["implementations"].values() for p in column["processes"])


@contextlib.contextmanager
def running_lab(
    workdir: Path, *args: str, command: Sequence[str] = ("experiments", "lab")
) -> Iterator[RunningLab]:
    """``python -m experiments lab`` (or ``command``: ``("lab",)``) with these
    arguments, up, then stopped: Ctrl-C first, then SIGKILL to every process it was
    seen to start."""
    port = free_port()
    argv = [sys.executable, "-m", *command, "--port", str(port)]
    argv += ["--workdir", str(workdir / "stack"), *DEMO_ARGS, *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = Proc("lab", argv, env, workdir / "lab.out").start()
    running = RunningLab(f"http://127.0.0.1:{port}", proc, workdir / "stack")

    def ready() -> bool:
        running.note_children()
        try:
            return _all_up(running.state())
        except httpx.HTTPError:
            return False

    try:
        proc.wait_for(ready, 150, "the lab and its stack to be up", interval=0.5)
        yield running
    except BaseException:
        sys.stderr.write(proc.output()[-5000:])
        raise
    finally:
        running.note_children()
        if proc.alive:
            proc.send(signal.SIGINT)  # Ctrl-C: the lab stops what it started
            proc.wait(60)
        if proc.alive:
            proc.send(signal.SIGKILL, group=True)
            proc.wait(10)
        # Each child leads a process group of its own: whatever is left of one goes.
        kill_groups(running.children)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory.mktemp("lab")) as running:
        yield running


# --- HTTP and SSE -------------------------------------------------------------------------


def test_the_page_builds_a_column_per_implementation_from_the_state(lab: RunningLab) -> None:
    page = httpx.get(lab.url + "/", timeout=10)
    assert page.status_code == 200
    assert 'id="columns"' in page.text and 'id="choose"' in page.text
    for asset in ("/static/lab.js", "/static/lab.css"):
        assert httpx.get(lab.url + asset, timeout=10).status_code == 200
    # The columns, their buttons and the counters' ids are made by the script from the
    # state (the browser test clicks them); the state says what each column controls.
    script = httpx.get(lab.url + "/static/lab.js", timeout=10).text
    assert "`${prefix}-${c}`" in script and "data-implementation=" in script
    columns = lab.state()["implementations"]
    assert list(columns) == ["bg", "celery"]  # the default: the chapter's two, in order
    assert [c["title"] for c in columns.values()] == ["BackgroundTasks", "Celery"]
    assert all(c["shown_by_default"] for c in columns.values())
    process = ["kill", "stop", "restart"]
    assert columns["bg"]["controls"] == {"bg-api": process, "redis": ["restart"]}
    assert columns["celery"]["controls"] == {
        "celery-api": process,
        "worker": process,
        "redis": ["restart"],
    }


def test_lab_binds_loopback_only(lab: RunningLab) -> None:
    port = int(lab.url.rsplit(":", 1)[1])
    listening = [
        getattr(c.laddr, "ip", None)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and getattr(c.laddr, "port", None) == port
    ]
    assert listening == ["127.0.0.1"]


def test_state_shows_every_process_of_each_column(lab: RunningLab) -> None:
    state = lab.state()
    assert state["target"] == "local"
    columns = state["implementations"]
    procs = {impl: {p["service"]: p for p in d["processes"]} for impl, d in columns.items()}
    assert set(procs["bg"]) == {"bg-api", "redis"}
    assert set(procs["celery"]) == {"celery-api", "worker", "beat", "redis"}
    assert procs["bg"]["bg-api"]["detail"].startswith("pid ")
    links = {impl: {x["label"]: x for x in d["links"]} for impl, d in columns.items()}
    assert links["bg"]["bg-api /docs"]["url"].endswith("/docs")
    assert httpx.get(links["celery"]["celery-api /docs"]["url"], timeout=10).status_code == 200
    # Local mode starts no Flower, and says so.
    assert links["celery"]["flower"]["url"] is None and links["celery"]["flower"]["note"]
    assert columns["bg"]["redelivery"] is None  # held in process memory: nothing hands it back
    assert columns["celery"]["redelivery"]["visibility_timeout"] == 6
    assert "6 s after it started" in columns["celery"]["redelivery"]["when"]


def test_sse_pushes_a_snapshot_and_then_each_action(lab: RunningLab) -> None:
    seen: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    acted = False
    deadline = time.monotonic() + 40
    with httpx.stream("GET", lab.url + "/api/events", timeout=20) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            assert time.monotonic() < deadline, f"no item event over SSE; saw {len(seen)}"
            if not line.startswith("data: "):
                continue
            seen.append(json.loads(line.removeprefix("data: ")))
            if not acted:
                # The first snapshot comes at once; then act, and watch it arrive.
                assert "implementations" in seen[0] and "events" in seen[0]
                r = lab.act("bg", "item")
                assert r.status_code == 200 and r.json()["status"] == "ok", r.text
                acted = True
                continue
            items = [e for e in seen[-1]["events"] if e["action"] == "item"]
            tasks = seen[-1]["implementations"]["bg"]["tasks"]
            if items and items[-1]["status"] == "ok" and any(t["kind"] == "log" for t in tasks):
                break
    assert "item created" in items[-1]["result"]


def test_actions_outside_the_controls_are_refused(lab: RunningLab) -> None:
    refused = [
        ("bg", "explode", None),
        ("celery", "kill", "redis"),  # redis: restart only
        ("celery", "kill", "beat"),  # not a service the page controls
        ("bg", "kill", "worker"),  # Celery's worker, from the BackgroundTasks column
        ("celery", "kill", "sshd"),
    ]
    for impl, action, service in refused:
        r = lab.act(impl, action, service)
        assert r.status_code == 400, (impl, action, service, r.text)
    assert lab.act("taskiq", "send").status_code == 400  # declared, not run by this lab
    assert lab.act("nowhere", "send").status_code == 422
    assert lab.act("bg", "send", count=1000).status_code == 422
    assert _all_up(lab.state())


def test_requests_not_addressed_to_the_lab_are_refused(lab: RunningLab) -> None:
    port = lab.url.rsplit(":", 1)[1]
    before = len(lab.state()["events"])
    # Harmless, should the guard ever let it through.
    body = {"implementation": "bg", "action": "item"}
    foreign = [
        {"Origin": "http://evil.example"},  # another site's form or fetch
        {"Host": f"evil.example:{port}"},  # DNS rebinding
    ]
    for headers in foreign:
        r = httpx.post(lab.url + "/api/actions", json=body, headers=headers, timeout=10)
        assert r.status_code == 403, (headers, r.text)
        assert "this lab" in r.json()["detail"]
    # A rebound page cannot read the snapshots either.
    r = httpx.get(lab.url + "/api/state", headers={"Host": f"evil.example:{port}"}, timeout=10)
    assert r.status_code == 403
    assert len(lab.state()["events"]) == before
    # The lab by any of its loopback names, with its own origin, as its page asks.
    mine = {"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
    assert httpx.get(lab.url + "/api/state", headers=mine, timeout=10).status_code == 200


def test_graceful_stop_waits_for_running_background_tasks(lab: RunningLab) -> None:
    httpx.post(lab.url + "/api/reset", timeout=10).raise_for_status()
    assert lab.act("bg", "send", count=2).json()["status"] == "ok"
    wait_until(lambda: lab.counters("bg")["running"] == 2, 20, "two BG notifications running")
    stop = lab.act("bg", "stop", "bg-api").json()
    # uvicorn's SIGTERM waits for the response's background tasks: nothing lost.
    assert stop["status"] == "ok", stop
    assert "exited after" in stop["result"]
    assert {t["then"] for t in stop["in_flight"]} <= {"running", "queued"}
    assert len(stop["in_flight"]) == 4
    wait_until(lambda: lab.counters("bg", "all")["succeeded"] == 4, 20, "4 BG tasks succeeded")
    assert lab.counters("bg", "all")["lost"] == 0
    assert lab.act("bg", "restart", "bg-api").json()["status"] == "ok"


def test_restarting_redis_keeps_the_queue_and_both_columns_recover(lab: RunningLab) -> None:
    httpx.post(lab.url + "/api/reset", timeout=10).raise_for_status()
    r = lab.act("celery", "restart", "redis").json()
    assert r["status"] == "ok", r
    assert "redis" in r["result"] and "up again" in r["result"]
    # After Redis came back (AOF on), publishing, the worker and the ledger all work.
    for impl in ("celery", "bg"):
        sent = lab.act(impl, "send", count=1).json()
        assert sent["status"] == "ok", sent
    wait_until(
        lambda: lab.counters("celery")["succeeded"] == 1 and lab.counters("bg")["succeeded"] == 1,
        60,
        "a notification in each column after the Redis restart",
        0.5,
    )


# --- last: Ctrl-C ---------------------------------------------------------------------------


def test_ctrl_c_stops_the_lab_and_everything_it_started(lab: RunningLab) -> None:
    # Standalone: whatever an earlier test left down comes back up first.
    for impl, service in (("bg", "bg-api"), ("celery", "celery-api"), ("celery", "worker")):
        if not lab.processes(impl)[service]["up"]:
            assert lab.act(impl, "restart", service).json()["status"] == "ok"
    lab.note_children()
    started = {pid: t for pid, t in lab.children.items() if psutil.pid_exists(pid)}
    assert len(started) >= 5  # redis, two uvicorns, worker, beat
    lab.proc.send(signal.SIGINT)
    assert lab.proc.wait(60) == 0, lab.proc.output()[-3000:]
    left = kill_groups(started)
    assert left == [], f"still running after the lab exited: {left}"
