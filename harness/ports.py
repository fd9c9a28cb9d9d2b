"""Free TCP ports for the servers a test or an experiment starts.

A port taken by binding to port 0 comes from the kernel's ephemeral range, the same
range every outgoing connection draws its local port from. Between the moment it is
chosen and the moment the server binds it, a client connection elsewhere on the
machine (a RabbitMQ node dialling its peers, a worker dialling Redis) may take it:
the server then fails with EADDRINUSE (``dist_port_already_used`` on RabbitMQ). So
ports here come from below the ephemeral range, where no connection's local port
lands. Each xdist worker draws from a slice of its own (any other process by its
PID); within it, the first process to draw takes the lower half and the processes
it starts (a lab under test, which inherits the worker's environment) the upper
half, so a port a test chose for its child is not the one the child draws next.
Each port is checked by a bind before it is handed out.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

LOWEST = 10_000  # above the well-known and most registered servers' ports
SLICES = 16  # xdist's workers (and any other process, by its PID)
OWNER = "HARNESS_PORTS_OWNER"  # the PID of the process that drew first in this slice

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


def my_half(share: range, owner: str | None, pid: int) -> range:
    """The lower half for the slice's first process, the upper for those it starts."""
    half = len(share) // 2
    return share[:half] if owner in (None, str(pid)) else share[half:]


def _candidates() -> Iterator[int]:
    high = ephemeral_range().start
    if high - LOWEST < SLICES * 64:
        logger.warning(
            "no room for ports below the ephemeral range (it starts at %d): the kernel picks "
            "them, and a connection may take one before its server binds it",
            high,
        )
        return iter(())
    pid = os.getpid()
    share = my_slice(LOWEST, high, os.environ.get("PYTEST_XDIST_WORKER"), pid)
    share = my_half(share, os.environ.get(OWNER), pid)
    os.environ.setdefault(OWNER, str(pid))  # what this process starts inherits it
    first = random.randrange(len(share))
    return itertools.cycle([*share[first:], *share[:first]])


def _bindable(port: int) -> bool:
    # 0.0.0.0 is the stricter check: it fails if any IPv4 socket holds the port,
    # a server on 127.0.0.1 included.
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
        for port in itertools.islice(_ports, 1000):
            if _bindable(port):
                return port
    logger.warning("no free port in this process's share: the kernel picks one")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
