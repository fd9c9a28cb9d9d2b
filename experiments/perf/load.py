"""The load client the performance experiments share: asyncio + httpx, and a
minimal raw HTTP/1.1 client for probes; reading when tasks finished.

The load client is Python (httpx, HTTP/1.1 keep-alive, one connection per
concurrent worker) running on the same machine as the servers, so it costs CPU
the servers would otherwise have: absolute numbers include it, which is why
every experiment reports ratios against a baseline measured the same way in the
same run (and the client's own CPU per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from experiments.common import Progress
from harness.procs import Timeout, wait_until
from harness.target import Target
from shared.models import IN_FLIGHT

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

    def __init__(self, base_url: str, size: int, *, reuse: bool = True) -> None:
        url = httpx.URL(base_url)
        self.host = url.host
        self.port = url.port or 80
        # reuse=False: a new connection per request, so that each one lands on
        # whichever server process accepts it (several uvicorn workers share a
        # socket: a kept-alive connection stays with the process that took it).
        self.reuse = reuse
        self.size = size if reuse else 0
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
        if self.reuse:
            self.idle.append((reader, writer))
        else:
            writer.close()
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
        if r.status_code < 300 and i >= 0:  # i < 0: warm-up requests, not counted
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


# --- what an API serves -----------------------------------------------------------------


def openapi(base_url: str, timeout: float = 10) -> dict[str, Any]:
    """The API's OpenAPI document: the routes it serves (its experiment routes with
    them, where the stack mounts them), as its own package declares them."""
    r = httpx.get(f"{base_url}/openapi.json", timeout=timeout)
    r.raise_for_status()
    doc: dict[str, Any] = r.json()
    return doc


# --- the ledger, read cheaply -----------------------------------------------------------


def finished(target: Target, task_ids: Sequence[str]) -> dict[str, tuple[str, float, float]]:
    """task id -> (state, started_at, finished_at) for the tasks that are done."""
    out: dict[str, tuple[str, float, float]] = {}
    for task_id, r in target.ledger().records_of(list(task_ids)).items():
        if r.state not in IN_FLIGHT and r.finished_at:
            out[task_id] = (r.state.value, r.started_at or r.finished_at, r.finished_at)
    return out


def wait_finished(
    target: Target, task_ids: Sequence[str], timeout: float, label: str = "tasks"
) -> dict[str, tuple[str, float, float]]:
    """Poll until every task is done or ``timeout`` passes; return what finished."""
    done: dict[str, tuple[str, float, float]] = {}
    progress = Progress(f"{label} finished", len(task_ids))

    def all_done() -> bool:
        nonlocal done
        done = finished(target, task_ids)
        progress.done = 0
        progress.advance(len(done))
        return len(done) == len(task_ids)

    with contextlib.suppress(Timeout):
        wait_until(all_done, timeout, label, interval=0.2)
    progress.close()
    return done


# --- closed loop, at saturation ---------------------------------------------------------


@dataclass
class Saturation:
    """A closed loop's outcome: how many requests were answered in how long."""

    requests: int
    errors: int
    seconds: float
    latencies: list[float]  # seconds, the answered ones

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def closed_loop(
    base_url: str,
    path: str,
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 0.3,
    on_counting: Callable[[], object] | None = None,
) -> Saturation:
    """``concurrency`` keep-alive connections, each sending ``POST path`` again as soon
    as its last one is answered, for ``seconds`` (after ``warmup`` seconds not
    counted): what the server takes at that concurrency. ``on_counting`` is called
    once, as the counted window opens (the caller's CPU reading); the window lasts
    until the last request sent in it is answered. The raw client (``ProbePool``):
    tens of microseconds of CPU per request here, not httpx's millisecond, so that
    the client takes little of the CPU the server measures."""
    answered = 0
    errors = 0
    latencies: list[float] = []
    async with ProbePool(base_url, concurrency) as pool:
        start = time.perf_counter()
        counted_from = start + warmup
        deadline = counted_from + seconds
        opened = asyncio.Event()

        async def window() -> None:
            await asyncio.sleep(max(0.0, counted_from - time.perf_counter()))
            if on_counting is not None:
                on_counting()
            opened.set()

        async def loop() -> None:
            nonlocal answered, errors
            while (sent := time.perf_counter()) < deadline:
                if sent >= counted_from and not opened.is_set():
                    await opened.wait()  # the window's reading first
                    sent = time.perf_counter()
                status = await pool.request("POST", path)
                if sent < counted_from:
                    continue
                if 200 <= status < 300:
                    answered += 1
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

        await asyncio.gather(window(), *(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - counted_from
    return Saturation(answered, errors, elapsed, latencies)
