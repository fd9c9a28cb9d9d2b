"""Child processes, each in a process group of its own, and bounded waits.

Every process is stopped by PID (or its group), never by name. Every wait has a
deadline and raises ``Timeout`` when it runs out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


class Timeout(AssertionError):
    """A bounded wait ran out."""


def wait_until(
    predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``predicate`` until it returns something truthy; raise ``Timeout`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise Timeout(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """One child process, in a process group of its own, with its output in a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = REPO_ROOT
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_at: float | None = None

    def start(self) -> Proc:
        if self.alive:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"\n--- start {self.name}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: killpg reaches the children
            )
        self.started_at = time.time()
        logger.info("started %s (pid %d)", self.name, self.popen.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def send(self, sig: signal.Signals, *, group: bool = False) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the whole group (a Celery worker's pool children included)."""
        self.send(signal.SIGKILL, group=True)
        self.wait(10)

    def terminate(self, timeout: float = 30) -> int | None:
        """SIGTERM to the main process only (a graceful shutdown); wait up to ``timeout``."""
        self.send(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 5) -> None:
        """Teardown: graceful if it goes quickly, then SIGKILL to the group, always."""
        if self.popen is None:
            return
        if self.alive:
            self.terminate(grace)
        self.send(signal.SIGKILL, group=True)  # leftovers in the group, if any
        self.kill_session()
        self.wait(10)

    def kill_session(self) -> None:
        """SIGKILL what it started outside its process group: a child that made a
        group of its own (RQ's work horse calls setpgrp) stays in its session, and
        outlives its parent's group kill, for ever if its job hangs."""
        if self.popen is None:
            return
        for pid in session_members(self.popen.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float,
        what: str,
        interval: float = 0.05,
    ) -> T:
        """``wait_until``, but a process that exits fails the wait at once, with its
        last output: waiting out the deadline for a dead process only hides why."""

        def check() -> T | None:
            if not self.alive:
                raise RuntimeError(
                    f"{self.name} exited while waiting for {what}:\n{self.output()[-3000:]}"
                )
            return predicate()

        return wait_until(check, timeout, what, interval)

    def wait_for_output(self, pattern: str, timeout: float, *, after: int = 0) -> None:
        rx = re.compile(pattern)
        self.wait_for(
            lambda: bool(rx.search(self.output()[after:])),
            timeout,
            f"{self.name} to print {pattern!r}",
        )


def stop_all(procs: list[Proc], grace: float = 5) -> None:
    """``Proc.stop`` for several at once: SIGTERM to each, one grace period for them
    all (a Celery worker's warm shutdown takes seconds of its own; the others need
    not wait for it), then SIGKILL to every group, always."""
    alive = [p for p in procs if p.alive]
    for proc in alive:
        proc.send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in alive:
        proc.wait(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.popen is not None:
            proc.send(signal.SIGKILL, group=True)  # leftovers in the group, if any
            proc.kill_session()
            proc.wait(10)


def wait_http(url: str, timeout: float, proc: Proc | None = None) -> None:
    """Until ``url`` answers 200 (or ``proc`` exits, which raises at once)."""

    def up() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    what = f"{url} to answer 200"
    if proc is None:
        wait_until(up, timeout, what, interval=0.1)
    else:
        proc.wait_for(up, timeout, what, interval=0.1)


def _members(field: int, value: int) -> list[int]:
    """PIDs of the live (non-zombie) processes whose /proc stat ``field`` (counted after
    the command's closing parenthesis: state, ppid, pgrp, session) is ``value``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and int(fields[field]) == value:
                found.append(int(stat.parent.name))
    return found


def group_members(pgid: int) -> list[int]:
    """PIDs of the live processes in process group ``pgid`` (Linux /proc)."""
    return _members(2, pgid)


def session_members(sid: int) -> list[int]:
    """PIDs of the live processes in session ``sid``: every process started with
    ``start_new_session`` leads one, and its descendants stay in it whatever groups
    they make."""
    return _members(3, sid)


def kill_groups(leaders: Mapping[int, float | None]) -> list[int]:
    """SIGKILL what is left of each process named by PID: its process group (the
    processes it leads), and the process itself if it is alive and leads none;
    return the PIDs that had anything left. A create time (psutil's), when known,
    guards against a reused PID: a live process started at another time is not ours."""
    import psutil  # the experiments' dependency, not the services'

    killed = []
    for pid, created in leaders.items():
        alive = False
        if created is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                if process.create_time() != created:
                    continue
                alive = process.status() != psutil.STATUS_ZOMBIE
        members = group_members(pid)
        if not members and not alive:
            continue
        killed.append(pid)
        with contextlib.suppress(ProcessLookupError):
            if members:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    return killed


def tree_pids(pid: int) -> set[int]:
    """``pid`` and every process under it (empty: it is gone)."""
    import psutil  # the experiments' dependency, not the services'

    try:
        root = psutil.Process(pid)
        return {root.pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def tree_memory(pid: int) -> tuple[float, float, int] | None:
    """RSS and PSS in MiB of ``pid``'s process tree, and how many processes were read
    (Linux's PSS; RSS where there is none); None when it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    rss = pss = 0.0
    count = 0
    for p in tree:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
        count += 1
    return rss / 2**20, pss / 2**20, count
