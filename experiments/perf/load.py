"""What the performance experiments share: the target (local processes or a
compose stack), an asyncio + httpx load client, percentiles and progress.

The load client is Python (httpx, HTTP/1.1 keep-alive, one connection per
concurrent worker) running on the same machine as the servers, so it costs CPU
the servers would otherwise have: absolute numbers include it, which is why
every experiment reports ratios against a baseline measured the same way in the
same run (and the client's own CPU per request).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from experiments.processes import Timeout, wait_until
from experiments.targets import ComposeTarget, LocalTarget, Target, health

# --- arguments and targets ----------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (what the tests and `all --quick` use)"
    )
    parser.add_argument(
        "--target",
        choices=["local", "compose"],
        default="local",
        help="local: start its own processes on free ports (default); "
        "compose: use a running `docker compose` stack",
    )
    parser.add_argument("--bg-url", default="http://127.0.0.1:8001", help="compose target only")
    parser.add_argument("--celery-url", default="http://127.0.0.1:8002", help="compose target only")
    parser.add_argument(
        "--compose-project", default=None, help="compose target: the project name (-p)"
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        default=None,
        help="where to write the report (default: $REPORTS_DIR or reports/)",
    )


def reports_dir(args: argparse.Namespace) -> Path:
    # Read at call time (not import time), so a test can point it at a tmp dir.
    return Path(args.reports_dir or os.environ.get("REPORTS_DIR", "reports"))


@contextlib.contextmanager
def open_target(
    args: argparse.Namespace,
    services: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    worker_concurrency: int = 2,
) -> Iterator[Target]:
    """A fresh local stack in a temp dir (always closed), or the running compose stack.

    ``env`` (settings) and ``worker_concurrency`` only apply to the local target:
    a compose stack runs with whatever settings it was started with.
    """
    if args.target == "compose":
        compose = ComposeTarget(
            project=args.compose_project, bg_url=args.bg_url, celery_url=args.celery_url
        )
        for side in {"bg" if s == "bg-api" else "celery" for s in services if s.endswith("-api")}:
            if health(compose, side) is None:
                raise RuntimeError(f"the compose stack's {side} API at {compose.url(side)} is down")
        yield compose
        return
    workdir = Path(tempfile.mkdtemp(prefix="experiment-"))
    stack = LocalTarget(workdir, env, worker_concurrency=worker_concurrency)
    try:
        for service in services:
            stack.start(service, timeout=60)
        yield stack
    except BaseException:
        print(f"process output (from {workdir}):\n{stack.outputs()[-6000:]}", file=sys.stderr)
        raise
    finally:
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)


def is_local(target: Target) -> bool:
    return isinstance(target, LocalTarget)


# --- statistics -----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(seconds: Sequence[float], *, scale: float = 1000.0) -> dict[str, float]:
    """n, p50, p95, p99, max and mean of durations, in ms by default."""
    return {
        "n": len(seconds),
        "p50": percentile(seconds, 50) * scale,
        "p95": percentile(seconds, 95) * scale,
        "p99": percentile(seconds, 99) * scale,
        "max": (max(seconds) * scale) if seconds else math.nan,
        "mean": (sum(seconds) / len(seconds) * scale) if seconds else math.nan,
    }


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def conditions() -> dict[str, Any]:
    """How busy the machine was when the run started (the numbers depend on it)."""
    load1, load5, _ = os.getloadavg()
    return {"loadavg_1m": round(load1, 2), "loadavg_5m": round(load5, 2), "cpus": os.cpu_count()}


# --- progress -------------------------------------------------------------------------


class Progress:
    """One line per step on a terminal (``\\r``), every 10 % otherwise (CI logs)."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.tty = sys.stderr.isatty()
        self._last_decile = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.tty:
            print(f"\r  {self.label}: {self.done}/{self.total}", end="", file=sys.stderr)
            return
        decile = self.done * 10 // self.total
        if decile != self._last_decile and decile in (0, 5, 10):
            self._last_decile = decile
            print(f"  {self.label}: {self.done}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the load client ------------------------------------------------------------------

Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass
class Sample:
    sent: float  # seconds after the run started
    latency: float  # seconds
    status: int  # 0: transport error or timeout


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    client_cpu: float = 0.0  # CPU seconds this process spent during the run

    def latencies(self) -> list[float]:
        return [s.latency for s in self.samples if 200 <= s.status < 300]

    @property
    def errors(self) -> int:
        return sum(1 for s in self.samples if not 200 <= s.status < 300)


async def _timed(client: httpx.AsyncClient, request: Request, i: int, t0: float) -> Sample:
    sent = time.perf_counter()
    try:
        r = await request(client, i)
        status = r.status_code
    except httpx.HTTPError:
        status = 0
    return Sample(sent - t0, time.perf_counter() - sent, status)


def client_for(concurrency: int, timeout: float = 30) -> httpx.AsyncClient:
    """Keep-alive HTTP/1.1, one pooled connection per concurrent request."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=timeout)


async def warm(client: httpx.AsyncClient, request: Request, concurrency: int) -> None:
    """Open every pooled connection before measuring (connection setup is not measured)."""
    await asyncio.gather(*(request(client, -1 - i) for i in range(concurrency)))


async def bursts(
    client: httpx.AsyncClient,
    request: Request,
    *,
    total: int,
    concurrency: int,
    interval: float = 0.0,
    jitter: float = 0.5,
    max_seconds: float = 300,
    progress: Progress | None = None,
) -> LoadResult:
    """``concurrency`` workers send ``total`` requests; worker w sends requests w, w+c, ...

    With ``interval`` > 0 the workers are paced: every ``interval`` seconds all of
    them send one request at the same moment (a burst of ``concurrency``), or at
    once if their previous answer came late. So the server sees ``concurrency``
    simultaneous requests at a bounded rate. The gaps vary by ±``jitter`` (seeded,
    so reproducible): a fixed period could line up with a task's own period (the
    work after a ``delay``-long sleep) and hit it every time, or never.
    ``interval`` 0 is a closed loop. Bounded by ``total`` and by ``max_seconds``.
    """
    result = LoadResult()
    rng = random.Random(total * 1000 + concurrency)
    starts = [0.0]
    for _ in range(total // max(concurrency, 1) + 1):
        starts.append(starts[-1] + interval * (1 + jitter * (2 * rng.random() - 1)))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    deadline = t0 + max_seconds

    async def worker(w: int) -> None:
        for k, i in enumerate(range(w, total, concurrency)):
            if interval > 0:
                delay = t0 + starts[k] - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if time.perf_counter() > deadline:
                return
            result.samples.append(await _timed(client, request, i, t0))
            if progress is not None:
                progress.advance()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    result.wall = time.perf_counter() - t0
    result.client_cpu = time.process_time() - cpu0
    result.samples.sort(key=lambda s: s.sent)
    return result


class ProbePool:
    """A minimal HTTP/1.1 keep-alive client for probes, on asyncio streams.

    httpx costs about a millisecond of client CPU per request and its pool gets
    slower as it grows; a probe that measures event-loop lag at millisecond
    resolution, with a hundred requests waiting behind a blocked server, needs
    neither. Every connection is opened beforehand; a probe takes an idle one
    (or opens one if none is idle), sends a GET or POST without a body and reads
    the answer (Content-Length bodies only, which is what uvicorn sends here).
    """

    def __init__(self, base_url: str, size: int) -> None:
        url = httpx.URL(base_url)
        self.host = url.host
        self.port = url.port or 80
        self.size = size
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    async def __aenter__(self) -> ProbePool:
        self.idle = list(await asyncio.gather(*(self._connect() for _ in range(self.size))))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle = []

    async def request(self, method: str, path: str) -> int:
        """The response's status; 0 if the connection failed."""
        status, _ = await self.fetch(method, path)
        return status

    async def fetch(self, method: str, path: str) -> tuple[int, bytes]:
        """The response's status and body; (0, b"") if the connection failed."""
        reader, writer = self.idle.pop() if self.idle else await self._connect()
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            writer.close()
            return 0, b""
        self.idle.append((reader, writer))
        return status, body


async def submit(
    base: str,
    path_for: Callable[[int], str],
    *,
    n: int,
    concurrency: int,
    label: str,
    json_for: Callable[[int], dict[str, Any]] | None = None,
) -> tuple[list[str], int]:
    """POST ``n`` requests (closed loop, ``concurrency`` clients); return the task
    ids the accepted ones scheduled, in order, and the number of errors."""
    task_ids: list[str] = []

    async def post(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = json_for(i) if json_for else None
        r = await client.post(f"{base}{path_for(i)}", json=body)
        if r.status_code == 200 and i >= 0:  # i < 0: warm-up requests, not counted
            task_ids.extend(r.json()["task_ids"])
        return r

    progress = Progress(label, n)
    async with client_for(concurrency) as client:
        result = await bursts(client, post, total=n, concurrency=concurrency, progress=progress)
    progress.close()
    return task_ids, result.errors


async def _timed_probe(
    send: Callable[[int], Awaitable[int]], i: int, t0: float, scheduled: float
) -> Sample:
    start = time.perf_counter()
    status = await send(i)
    # From the scheduled send time: if this process was late sending it, that
    # counts too (it never is by more than a fraction of a ms when idle).
    return Sample(scheduled, time.perf_counter() - min(start, t0 + scheduled), status)


async def open_loop(
    send: Callable[[int], Awaitable[int]],
    *,
    every: float,
    duration: float,
    timeout: float = 60,
) -> LoadResult:
    """One request every ``every`` seconds for ``duration`` seconds, each sent on
    schedule whether or not the previous ones were answered (probes: a stalled
    server shows as a pile of waiting probes, not as one slow one). ``send``
    returns the status code."""
    result = LoadResult()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    tasks: list[asyncio.Task[Sample]] = []
    count = max(1, int(duration / every))
    for i in range(count):
        delay = t0 + i * every - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_timed_probe(send, i, t0, i * every)))
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    result.samples = sorted((t.result() for t in done), key=lambda s: s.sent)
    result.samples += [Sample(math.nan, math.nan, 0) for _ in pending]
    result.wall = time.perf_counter() - t0
    result.client_cpu = time.process_time() - cpu0
    return result


# --- the ledger, read cheaply -----------------------------------------------------------


def finished(
    target: Target, task_ids: Sequence[str], since: float | None = None
) -> dict[str, tuple[str, float, float]]:
    """task id -> (state, started_at, finished_at) for the tasks that are done.

    Local: one pipelined HMGET per poll straight from Redis, so polling costs the
    servers nothing. Compose (Redis is not published): through the Celery API."""
    out: dict[str, tuple[str, float, float]] = {}
    if isinstance(target, LocalTarget):
        client = target.redis()
        try:
            pipe = client.pipeline()
            for task_id in task_ids:
                pipe.hmget(f"ledger:task:{task_id}", "state", "started_at", "finished_at")
            for task_id, (state, started, done) in zip(task_ids, pipe.execute(), strict=True):
                if state in ("succeeded", "failed") and done:
                    out[task_id] = (state, float(started or done), float(done))
        finally:
            client.close()
        return out
    wanted = set(task_ids)
    params: dict[str, float | int] = {"limit": 5000}
    if since is not None:
        params["since"] = since
    for side in ("celery", "bg"):
        try:
            r = httpx.get(target.url(side) + "/tasks", params=params, timeout=10)
        except httpx.HTTPError:
            continue
        if r.status_code != 200:
            continue
        for rec in r.json():
            if rec["task_id"] in wanted and rec.get("finished_at"):
                started = rec.get("started_at") or rec["finished_at"]
                out[rec["task_id"]] = (rec["state"], float(started), float(rec["finished_at"]))
        return out
    return out


def wait_finished(
    target: Target,
    task_ids: Sequence[str],
    timeout: float,
    label: str = "tasks",
    since: float | None = None,
) -> dict[str, tuple[str, float, float]]:
    """Poll until every task is done or ``timeout`` passes; return what finished.

    ``since``: no task was queued before it (narrows a compose stack's ledger read)."""
    done: dict[str, tuple[str, float, float]] = {}
    progress = Progress(f"{label} finished", len(task_ids))

    def all_done() -> bool:
        nonlocal done
        done = finished(target, task_ids, since)
        progress.done = 0
        progress.advance(len(done))
        return len(done) == len(task_ids)

    with contextlib.suppress(Timeout):
        wait_until(all_done, timeout, label, interval=0.2)
    progress.close()
    return done
