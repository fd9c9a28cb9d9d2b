"""Ports for the servers the suite starts: below the kernel's ephemeral range, where no
outgoing connection's local port can take one before its server binds it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from harness import ports
from harness.ports import LOWEST, SLICES, ephemeral_range, free_port, my_half, my_slice


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


def test_a_process_and_the_ones_it_starts_draw_from_different_halves() -> None:
    share = range(20000, 21000)
    mine = my_half(share, None, pid=7)
    assert mine == my_half(share, "7", pid=7) == range(20000, 20500)
    assert set(my_half(share, "7", pid=8)).isdisjoint(mine)


def test_a_free_port_is_below_the_ephemeral_range_bindable_and_not_repeated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: range(32768, 61000))
    monkeypatch.setattr(ports, "_ports", None)
    monkeypatch.delenv(ports.OWNER, raising=False)
    found = [free_port() for _ in range(20)]
    assert len(set(found)) == 20
    for port in found:
        assert LOWEST <= port < 32768
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))


def test_without_room_below_the_range_the_kernel_picks_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: range(1024, 65536))
    monkeypatch.setattr(ports, "_ports", None)
    port = free_port()
    assert 0 < port < 65536
    assert "no room for ports below the ephemeral range" in caplog.text
