"""Secrets on every server: the stack's Redis refuses a client without its password,
and no process prints a password in a log line (the APIs log where their ledger
is; Celery, Beat and Flower their broker)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from harness.procs import group_members
from tests.integration.conftest import StackFactory

pytestmark = pytest.mark.slow


def test_redis_wants_its_password_and_no_log_line_shows_one(make_stack: StackFactory) -> None:
    stack = make_stack()
    stack.start_all(("redis", "bg-api", "celery-api", "worker", "beat", "flower"))
    url = urlsplit(stack.settings.redis_url)
    password = url.password
    assert password, "the stack's Redis has a password"
    # Without it, Redis answers nothing but NOAUTH; with it, everything.
    anonymous = redis.Redis(host="127.0.0.1", port=url.port or 6379, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    assert redis.Redis.from_url(stack.settings.redis_url, socket_timeout=2).ping()

    r = httpx.post(f"{stack.url('celery')}/send-notification/p@example.com", timeout=10)
    assert r.status_code == 202, r.text
    # No process of the stack carries the password on its command line (`ps` shows
    # every argv to every user): the servers read it from a file, the clients from
    # their environment.
    argvs = {}
    for name, proc in stack.procs.items():
        assert proc.pid is not None, name
        for pid in group_members(os.getpgid(proc.pid)):
            with contextlib.suppress(FileNotFoundError):
                argvs[f"{name}/{pid}"] = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert any(k.startswith("redis/") for k in argvs) and any(
        k.startswith("flower/") for k in argvs
    )
    shown = [k for k, argv in argvs.items() if password.encode() in argv]
    assert not shown, f"the Redis password is on the command line of {shown}"
    # An API that cannot reach its ledger says where it looked, without the password.
    dead = f"redis://:{password}@127.0.0.1:1/0"
    with stack.extra_api("bg", redis_url=dead) as extra:
        assert httpx.get(f"{extra}/health", timeout=5).status_code == 200
    said = {name: proc.output() for name, proc in stack.procs.items()}
    assert any("ledger unavailable at redis://:***@127.0.0.1:1/0" in out for out in said.values())
    leaked = [name for name, out in said.items() if password in out]
    assert not leaked, f"the Redis password is in the output of {leaked}"
