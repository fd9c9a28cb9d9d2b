"""Free TCP ports for the servers a test or an experiment starts.

A port taken by binding to port 0 comes from the kernel's ephemeral range, the same
range every outgoing connection draws its local port from. Between the moment it is
chosen and the moment the server binds it, a client connection elsewhere on the
machine (a RabbitMQ node dialling its peers, a worker dialling Redis) may take it:
the server then fails with EADDRINUSE (``dist_port_already_used`` on RabbitMQ). So
ports here come from below the ephemeral range, where no connection's local port
lands, each process from a slice of its own (an xdist worker by its number), in
turn from a random start, and each is checked by a bind before it is handed out.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

LOWEST = 10_000  # above the well-known and most registered servers' ports
SLICES = 16  # processes that draw ports at once: xdist's workers and an experiment

_lock = threading.Lock()
_ports: Iterator[int] | None = None


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    try:
        low, high = (int(n) for n in path.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def my_slice(low: int, high: int, worker: str | None, pid: int) -> range:
    """This process's share of [low, high): an xdist worker's by its number, any
    other process's by its PID."""
    match = re.fullmatch(r"gw(\d+)", worker or "")
    index = int(match.group(1)) if match else pid
    size = (high - low) // SLICES
    start = low + (index % SLICES) * size
    return range(start, start + size)


def _candidates() -> Iterator[int]:
    high = ephemeral_range().start
    if high - LOWEST < SLICES * 64:  # no room below the ephemeral range: the kernel's pick
        return iter(())
    share = my_slice(LOWEST, high, os.environ.get("PYTEST_XDIST_WORKER"), os.getpid())
    first = random.randrange(len(share))
    return itertools.cycle([*share[first:], *share[:first]])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    global _ports
    with _lock:
        if _ports is None:
            _ports = _candidates()
        for port, _ in zip(_ports, range(1000), strict=False):
            if _bindable(port):
                return port
    with socket.socket() as s:  # nothing free in the slice: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
