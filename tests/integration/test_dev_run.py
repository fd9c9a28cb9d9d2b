"""``make dev``: the six services as local processes, and Ctrl-C stops every one."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from harness.ports import free_port
from harness.procs import Proc, group_members, kill_groups, wait_http

SERVICES = {"bg-api", "celery-api", "worker", "beat", "flower"}


def started_groups(output: str) -> dict[str, int]:
    """The process groups make dev says it started, each led by the process named:
    its services' (honcho's lines) and its redis-server's (a line of its own)."""
    groups = {name: int(pid) for name, pid in re.findall(r"(\S+) started \(pid=(\d+)\)", output)}
    redis_pid = re.search(r"started redis-server on \S+ \(pid=(\d+)\)", output)
    if redis_pid:
        groups["redis-server"] = int(redis_pid[1])
    return groups


def answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_make_dev_starts_six_services_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    ports = {"BG_API_PORT": free_port(), "CELERY_API_PORT": free_port(), "FLOWER_PORT": free_port()}
    env = {
        **os.environ,
        # Nothing answers there: dev starts a redis-server of its own.
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "LOG_FILE": str(tmp_path / "log.txt"),
        "DEV_STATE_DIR": str(tmp_path / "state"),
        "FLOWER_USER": "dev-test",
        "FLOWER_PASSWORD": "dev-test-password",
        **{name: str(port) for name, port in ports.items()},
    }
    dev = Proc("dev", [sys.executable, "-m", "harness.dev"], env, tmp_path / "dev.out")
    try:
        dev.start()
        bg, celery, flower = (f"http://127.0.0.1:{p}" for p in ports.values())
        wait_http(bg + "/health", 60, dev)
        wait_http(celery + "/health", 60, dev)
        wait_http(flower + "/healthcheck", 60, dev)
        dev.wait_for_output(r"worker-dev@\S+ ready\.", 60)
        dev.wait_for_output(r"beat: Starting", 60)

        out = dev.output()
        groups = started_groups(out)
        assert set(groups) == SERVICES | {"redis-server"}, out
        assert httpx.get(flower + "/api/workers", timeout=5).status_code == 401
        auth = ("dev-test", "dev-test-password")
        assert httpx.get(flower + "/api/workers", auth=auth, timeout=5).status_code == 200

        # What a terminal's Ctrl-C does: SIGINT to the foreground process group.
        dev.send(signal.SIGINT, group=True)
        assert dev.wait(30) is not None, "make dev still running 30 s after Ctrl-C"
        left = {name: group_members(pgid) for name, pgid in groups.items()}
        assert not any(left.values()), f"processes left after Ctrl-C: {left}"
        assert not [p for p in ports.values() if answers(p)]
        assert "redis-server stopped" in dev.output()
    finally:
        # Read again here: a wait that timed out above left ``groups`` unread, and
        # every service make dev got as far as starting must go too.
        groups = started_groups(dev.output())
        dev.stop()
        kill_groups(dict.fromkeys(groups.values()))
