"""How the harness stops what it started: real child processes (``sh``), by process group."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil

from harness.procs import Proc, stop_all, wait_until


def _stubborn(tmp_path: Path, name: str) -> Proc:
    """A process that notes its SIGTERM (the time, in a file) and goes on."""
    mark = tmp_path / f"{name}.term"
    script = f'trap \'date +%s.%N > "{mark}"\' TERM; echo trap" "set; while :; do sleep 0.1; done'
    return Proc(name, ["sh", "-c", script], {"PATH": "/usr/bin:/bin"}, tmp_path / f"{name}.out")


def test_stop_all_terms_every_process_at_once_then_kills_each_group(tmp_path: Path) -> None:
    stubborn = [_stubborn(tmp_path, f"stubborn-{i}") for i in range(3)]
    polite = Proc("polite", ["sleep", "60"], {}, tmp_path / "polite.out")
    procs = [*stubborn, polite]
    try:
        for proc in procs:
            proc.start()
        # (Its log begins with its command line: the quotes keep the phrase out of it.)
        wait_until(lambda: all("trap set" in p.output() for p in stubborn), 10, "the traps set")
        stop_all(procs, grace=2)
        # Every one is gone: the polite one by its SIGTERM, the stubborn ones by SIGKILL.
        assert [p.alive for p in procs] == [False] * 4
        assert polite.wait(0) == -signal.SIGTERM
        assert [p.wait(0) for p in stubborn] == [-signal.SIGKILL] * 3
        # One grace period for them all: each got its SIGTERM before any was killed,
        # not one grace period after the one before it.
        termed = [float((tmp_path / f"{p.name}.term").read_text()) for p in stubborn]
        assert max(termed) - min(termed) < 1.0, termed
    finally:
        for proc in procs:
            proc.stop(grace=0)


def test_stop_kills_a_child_that_left_its_process_group(tmp_path: Path) -> None:
    # RQ's work horse calls setpgrp: a group kill of its worker misses it, and its
    # job runs on after the test; it stays in the worker's session, and that is killed.
    pid_file = tmp_path / "horse.pid"
    script = (
        "import os, subprocess, sys, time\n"
        "horse = subprocess.Popen([sys.executable, '-c', "
        "'import os, time; os.setpgrp(); time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(horse.pid))\n"
        "time.sleep(300)\n"
    )
    worker = Proc("worker", [sys.executable, "-c", script], {}, tmp_path / "worker.out")
    horse: psutil.Process | None = None
    try:
        worker.start()
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, "the horse's pid")
        horse = psutil.Process(int(pid_file.read_text()))
        wait_until(lambda: os.getpgid(horse.pid) == horse.pid, 10, "the horse's own group")
        worker.send(signal.SIGKILL, group=True)  # what a crash fault does: the group only
        assert horse.is_running() and horse.status() != psutil.STATUS_ZOMBIE
        worker.stop(grace=0)
        horse.wait(10)
        assert not horse.is_running() or horse.status() == psutil.STATUS_ZOMBIE
    finally:
        worker.stop(grace=0)
        if horse is not None and horse.is_running():
            horse.kill()
