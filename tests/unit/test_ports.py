"""Ports for the servers the suite starts: below the kernel's ephemeral range, where no
outgoing connection's local port can take one before its server binds it."""

from __future__ import annotations

import socket
from pathlib import Path

from harness.ports import LOWEST, SLICES, ephemeral_range, free_port, my_slice


def test_the_ephemeral_range_is_read_from_the_kernel(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t50000\n")
    assert ephemeral_range(f) == range(40000, 50001)
    assert ephemeral_range(tmp_path / "missing") == range(32768, 61000)


def test_each_xdist_worker_draws_from_a_slice_of_its_own() -> None:
    slices = [my_slice(LOWEST, 32768, f"gw{i}", pid=1) for i in range(SLICES)]
    seen: set[int] = set()
    for s in slices:
        assert len(s) > 1000 and s.start >= LOWEST and s.stop <= 32768
        assert seen.isdisjoint(s)
        seen |= set(s)
    assert my_slice(LOWEST, 32768, None, pid=3) == slices[3]


def test_a_free_port_is_below_the_ephemeral_range_bindable_and_not_repeated() -> None:
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for port in ports:
        assert LOWEST <= port < ephemeral_range().start
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))
