"""The test clusters' ports (tests/fixtures/cluster.py): HAProxy binds them after
free_port() has released them, so a port the kernel could hand to another socket in between
made a cluster fail to start ("Address already in use")."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from tests.fixtures import cluster


def ephemeral_low() -> int:
    """The first port the kernel hands out for a bind to port 0 (Linux's default 32768)."""
    config = Path("/proc/sys/net/ipv4/ip_local_port_range")
    return int(config.read_text().split()[0]) if config.exists() else 32768


def test_ports_come_from_outside_the_kernels_and_rays_own_ranges() -> None:
    ports = [cluster.free_port() for _ in range(50)]
    assert max(ports) < ephemeral_low()
    assert min(ports) >= 20000  # Ray's worker ports end at 19999


def test_a_port_is_handed_out_once_and_one_in_use_is_skipped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.random, "sample", lambda population, k: list(population))
    monkeypatch.setattr(cluster, "_issued", set())
    first = cluster.free_port()  # the lowest free port of the range, and not held after
    with socket.socket() as busy:
        with contextlib.suppress(OSError):  # held elsewhere already: to be skipped alike
            busy.bind(("127.0.0.1", first + 1))
        second = cluster.free_port()
    assert second not in (first, first + 1)
