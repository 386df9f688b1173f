"""The pod's network, moved into its VM: a tap beside the pod's veth, joined by tc redirects.

CNI has already given the pod its namespace, veth (``eth0``) and IP, exactly as for a runc pod,
so Services, NetworkPolicy and DNS on the host see the same address.  Inside that namespace
a tap device is created for QEMU and two ``tc`` ingress filters redirect every frame from the
veth to the tap and back (Kata's ``tcfilter`` model); the guest's virtio NIC takes the veth's
MAC and the pod IP, so the bridge and its neighbours see the same endpoint as before.  The
veth keeps its address (the redirect takes every frame before the namespace's own stack sees
it), which makes this idempotent: a replacement VM for the same pod attaches the same way.
QEMU runs inside the namespace (``nsenter --net``) to open the tap.  Everything here lives
in the pod's namespace and goes with it when CNI deletes it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from dataclasses import dataclass

TAP = "tap0"
POD_IF = "eth0"


class NetworkError(Exception):
    pass


@dataclass(frozen=True)
class GuestNetwork:
    netns_path: str
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    mtu: int
    tap: str = TAP

    def kernel_arg(self) -> str:
        """What the guest's /init configures its NIC from."""
        return f"atoll.net={self.ip}/{self.prefixlen},{self.gateway},{self.mtu}"


async def attach(netns_path: str) -> GuestNetwork:
    """Create (or reuse) the tap and the redirects in the pod's namespace; its addresses."""
    links = json.loads(await _ns(netns_path, "ip", "-j", "addr", "show", "dev", POD_IF))
    if not links:
        raise NetworkError(f"the pod's namespace has no {POD_IF}")
    link = links[0]
    inet = [a for a in link.get("addr_info") or [] if a.get("family") == "inet"]
    if not inet:
        raise NetworkError(f"{POD_IF} in the pod's namespace has no IPv4 address")
    routes = json.loads(await _ns(netns_path, "ip", "-j", "-4", "route", "show", "default"))
    gateway = next((r["gateway"] for r in routes if r.get("gateway")), "")
    if not gateway:
        raise NetworkError("the pod's namespace has no default route")
    net = GuestNetwork(netns_path=netns_path, ip=str(ipaddress.ip_address(inet[0]["local"])),
                       prefixlen=int(inet[0]["prefixlen"]), gateway=gateway,
                       mac=str(link["address"]), mtu=int(link.get("mtu") or 1500))
    await _ns(netns_path, "ip", "link", "del", TAP, check=False)
    await _ns(netns_path, "ip", "tuntap", "add", "dev", TAP, "mode", "tap")
    await _ns(netns_path, "ip", "link", "set", TAP, "mtu", str(net.mtu), "up")
    for src, dst in ((POD_IF, TAP), (TAP, POD_IF)):
        await _ns(netns_path, "tc", "qdisc", "del", "dev", src, "ingress", check=False)
        await _ns(netns_path, "tc", "qdisc", "add", "dev", src, "ingress")
        await _ns(netns_path, "tc", "filter", "add", "dev", src, "parent", "ffff:", "protocol",
                  "all", "u32", "match", "u8", "0", "0", "action", "mirred", "egress",
                  "redirect", "dev", dst)
    return net


def qemu_args(net: GuestNetwork) -> list[str]:
    return ["-netdev", f"tap,id=net0,ifname={net.tap},script=no,downscript=no",
            "-device", f"virtio-net-device,netdev=net0,mac={net.mac}"]


def in_namespace(net: GuestNetwork, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={net.netns_path}", "--", *argv]


async def _ns(netns_path: str, *argv: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={netns_path}", "--", *argv, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()[:300]}")
    return out.decode()
