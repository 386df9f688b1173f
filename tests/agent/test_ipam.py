"""Pod addresses: leases on disk, reused per pod, released, never the gateway or broadcast."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from atoll.agent.host.network import LocalIPAM, NetworkError


def test_allocation_release_and_restart(tmp_path: Path) -> None:
    ipam = LocalIPAM(ipaddress.ip_network("10.9.0.0/29"), tmp_path)
    ips = [ipam.allocate(f"pod{i}") for i in range(5)]
    assert ips == [f"10.9.0.{i}" for i in range(2, 7)] and str(ipam.gateway) == "10.9.0.1"
    assert ipam.allocate("pod0") == "10.9.0.2"  # the same pod keeps its address
    with pytest.raises(NetworkError):
        ipam.allocate("one-too-many")
    ipam.release("pod2")
    assert not (tmp_path / "10.9.0.4").exists()
    assert ipam.allocate("late") == "10.9.0.4"
    again = LocalIPAM(ipaddress.ip_network("10.9.0.0/29"), tmp_path)  # an agent restart
    assert again.allocate("pod1") == "10.9.0.3" and again.allocate("late") == "10.9.0.4"
