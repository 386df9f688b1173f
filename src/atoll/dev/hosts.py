"""Pretend hosts on one machine: a network namespace each, on a bridge playing the LAN.

For development and tests of multi-host behaviour (scheduling, pod-to-pod traffic between
hosts, HA) without several machines: host *i* is the namespace ``<prefix>h<i>`` with one
interface on the bridge and its own address; its agent, containers and VMs run inside it.
The machine's own address on the bridge is where the hosts reach the API servers.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Host:
    index: int
    name: str       # Node name
    netns: str
    address: str    # on the bridge
    pod_cidr: str


@dataclass(frozen=True)
class Lan:
    bridge: str
    subnet: ipaddress.IPv4Network
    pod_range: ipaddress.IPv4Network
    prefix: str = "atoll-dev-"

    @property
    def gateway(self) -> str:
        """The machine's own address on the bridge (API servers are reached there)."""
        return str(self.subnet.network_address + 1)

    def host(self, i: int) -> Host:
        pods = list(self.pod_range.subnets(new_prefix=24))
        if i >= len(pods) or i + 10 >= self.subnet.num_addresses - 1:
            raise ValueError(f"no room for host {i} in {self.subnet} / {self.pod_range}")
        return Host(i, f"{self.prefix}host-{i}", f"{self.prefix}h{i}",
                    str(self.subnet.network_address + 10 + i), str(pods[i]))


def _ip(*args: str, netns: str | None = None, check: bool = True) -> None:
    cmd = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")


def create_lan(lan: Lan) -> None:
    _ip("link", "add", lan.bridge, "type", "bridge", check=False)
    _ip("addr", "replace", f"{lan.gateway}/{lan.subnet.prefixlen}", "dev", lan.bridge)
    _ip("link", "set", lan.bridge, "up")
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")


def create_host(lan: Lan, host: Host) -> None:
    veth = f"{lan.bridge[:8]}v{host.index}"
    delete_host(lan, host)
    _ip("netns", "add", host.netns)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    _ip("link", "set", veth, "master", lan.bridge)
    _ip("link", "set", veth, "up")
    _ip("link", "set", "lo", "up", netns=host.netns)
    _ip("addr", "add", f"{host.address}/{lan.subnet.prefixlen}", "dev", "eth0", netns=host.netns)
    _ip("link", "set", "eth0", "up", netns=host.netns)
    _ip("route", "add", "default", "via", lan.gateway, netns=host.netns)
    subprocess.run(in_host(host, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]), check=True)


def delete_host(lan: Lan, host: Host) -> None:
    """Kill what still runs in the host (its shims, containers, QEMUs), then remove it."""
    pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _ip("netns", "del", host.netns, check=False)
    _ip("link", "del", f"{lan.bridge[:8]}v{host.index}", check=False)


def delete_lan(lan: Lan) -> None:
    _ip("link", "del", lan.bridge, check=False)


def in_host(host: Host, argv: list[str]) -> list[str]:
    """Run in the host's network namespace only: ``ip netns exec`` would also remount /sys
    and hide the cgroup file system the container runtime needs."""
    return ["nsenter", f"--net=/run/netns/{host.netns}", "--", *argv]
