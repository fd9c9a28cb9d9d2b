"""Requests to one API: steady traffic from a thread of its own (what the soak and
the failover scenarios send while their faults come), and a batch sent one by one
(``submit``: a crash scenario's)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx

from harness.target import Target


@dataclass
class Traffic:
    """One implementation's requests, sent at a steady rate from a thread of its own."""

    implementation: str
    url: str
    rate: float
    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    # (time sent, task ids) of every accepted request.
    log: list[tuple[float, list[str]]] = field(default_factory=list)
    # (time sent, time answered, status; 0: no answer) of every request.
    answers: list[tuple[float, float, int]] = field(default_factory=list)
    prefix: str = "soak"
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=3) as client:
            for i in itertools.count():
                due = self.started + i / self.rate
                if self.stop.wait(max(0.0, due - time.monotonic())):
                    return
                sent = time.time()
                try:
                    r = client.post(f"/send-notification/{self.prefix}{i}@example.com")
                except httpx.HTTPError:
                    self.refused += 1
                    self.answers.append((sent, time.time(), 0))
                    continue
                self.answers.append((sent, time.time(), r.status_code))
                if r.status_code == 202:
                    ids = list(r.json()["task_ids"])
                    self.accepted += ids
                    self.log.append((sent, ids))
                else:
                    self.refused += 1

    def start(self) -> threading.Thread:
        self.started = time.monotonic()
        name = f"{self.prefix}-{self.implementation}"
        thread = threading.Thread(target=self.run, name=name, daemon=True)
        thread.start()
        return thread


def submit(target: Target, implementation: str, n: int) -> list[list[str]]:
    """POST n notification requests to ``implementation``'s API; return each one's
    task ids (notification, log).

    A new connection per request: with several API processes sharing a socket, each
    request lands on whichever one accepts it."""
    out: list[list[str]] = []
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    base = target.url(implementation)
    with httpx.Client(base_url=base, timeout=10, limits=no_keepalive) as c:
        for i in range(n):
            r = c.post(f"/send-notification/crash{i}@example.com")
            r.raise_for_status()
            out.append(list(r.json()["task_ids"]))
    return out
