"""Addresses that moved with their VM: host routes so a live-migrated VM keeps its IP.

Pod ranges are per host (routes.py routes each range to its host), so a VM that moves keeps an
address of its first host's range.  Every host therefore follows where each VM runs:

- the VM runs here with another host's address: ``ip/32 dev <bridge>``, and the bridge answers
  ARP for the addresses it routes elsewhere (``proxy_arp``), so the guest's gateway (on its
  first host) is this host now;
- the VM runs elsewhere with an address not of that host's range: ``ip/32 via <that host>``
  (on its first host too, which is how its old neighbours still reach it).

When a VM arrives, a gratuitous ARP on the bridge tells the guest its gateway's new MAC (the
bridge's); when a VM of this range leaves, one tells the pods here to send to the bridge. Both
would otherwise wait out their ARP caches (tens of seconds) with traffic to the guest lost.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from atoll.api.vmoperator import names as n
from atoll.client.controller import DONE, Builder, Controller, Result, TemporaryError
from atoll.client.factory import InformerFactory
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
#: rtm_protocol of these host routes (routes.py's pod ranges use 77)
PROTO = 78


@dataclass(frozen=True)
class Placement:
    ip: str
    host: str


def placements(vms: list[dict[str, Any]]) -> dict[str, Placement]:
    """{VM uid: (its address, its host)} for the VMs that have both."""
    out = {}
    for vm in vms:
        ip = ((vm.get("status") or {}).get("network") or {}).get("primaryIP4")
        host = (vm["metadata"].get("labels") or {}).get(n.HOST_LABEL)
        if ip and host:
            out[vm["metadata"].get("uid", "")] = Placement(str(ip), str(host))
    return out


def node_facts(nodes: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """{node: (pod range, InternalIP)}."""
    out = {}
    for node in nodes:
        cidr = (node.get("spec") or {}).get("podCIDR") or ""
        ip = next((a.get("address") for a in (node.get("status") or {}).get("addresses") or []
                   if a.get("type") == "InternalIP"), "")
        out[node["metadata"]["name"]] = (cidr, ip or "")
    return out


def _within(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def desired(where: dict[str, Placement], facts: dict[str, tuple[str, str]], me: str,
            my_ip: str, my_cidr: str) -> dict[str, str]:
    """{ip/32: "" (on the bridge here) or the address of the host to send it to}."""
    out: dict[str, str] = {}
    for p in where.values():
        if p.host == me:
            if not _within(p.ip, my_cidr):
                out[f"{p.ip}/32"] = ""
            continue
        cidr, via = facts.get(p.host, ("", ""))
        if via and via != my_ip and not _within(p.ip, cidr):
            out[f"{p.ip}/32"] = via
    return out


def gateway_of(ip: str, facts: dict[str, tuple[str, str]]) -> str | None:
    """The gateway a VM with ``ip`` was given: the first address of the range it is from."""
    for cidr, _ in facts.values():
        if cidr and _within(ip, cidr):
            return str(next(ipaddress.ip_network(cidr, strict=False).hosts()))
    return None


class RoamingRoutes(Controller):
    """One key: a sync rewrites this host's /32s at once."""

    name = "roaming-routes"
    backoff = (0.5, 30.0)

    def __init__(self, client: ApiClient, factory: InformerFactory, node_name: str,
                 host_ip: str, pod_cidr: str, bridge: str) -> None:
        self.node_name, self.host_ip, self.pod_cidr, self.bridge = \
            node_name, host_ip, pod_cidr, bridge
        self._last: dict[str, Placement] | None = None
        super().__init__(client, factory)

    def declare(self, b: Builder) -> None:
        self.vms = b.watches(n.GROUP, n.VERSION, "virtualmachines", self._changed)
        self.nodes = b.watches("", "v1", "nodes", lambda kind, node, old: ["all"])

    @staticmethod
    def _changed(kind: str, vm: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        before, after = placements([old] if old else []), placements([vm])
        return ["all"] if list(before.values()) != list(after.values()) or kind == "DELETED" \
            else []

    async def on_synced(self) -> None:
        self.queue.add("all")

    async def reconcile(self, key: str) -> Result:
        where = placements(self.vms.list())
        facts = node_facts(self.nodes.list())
        want = desired(where, facts, self.node_name, self.host_ip, self.pod_cidr)
        try:
            await asyncio.to_thread(self._apply, want)
            await asyncio.to_thread(self._announce, where, facts)
        except (OSError, NetlinkError) as err:
            raise TemporaryError(f"roaming routes: {err}") from err
        self._last = where
        return DONE

    def _apply(self, want: dict[str, str]) -> None:
        with IPRoute() as ipr:
            bridge = ipr.link_lookup(ifname=self.bridge)
            have: dict[str, str] = {}
            found: dict[str, dict[str, Any]] = {}  # what deleting each takes: all its keys
            for route in ipr.get_routes(family=2, proto=PROTO):
                dst = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
                have[dst] = route.get_attr("RTA_GATEWAY") or ""
                found[dst] = {"oif": route.get_attr("RTA_OIF"), "scope": route["scope"]}
                if have[dst]:
                    found[dst]["gateway"] = have[dst]
            for dst, via in want.items():
                if dst in have and have[dst] == via:
                    continue
                if via:
                    ipr.route("replace", dst=dst, gateway=via, proto=PROTO)
                elif bridge:
                    ipr.route("replace", dst=dst, oif=bridge[0], scope=253, proto=PROTO)
                else:
                    continue  # no bridge yet: the VM's tap makes it, and its next change
                log.info("roaming: %s %s", dst, f"via {via}" if via else f"on {self.bridge}")
            for dst in set(have) - set(want):
                try:
                    ipr.route("del", dst=dst, proto=PROTO, **found[dst])
                    log.info("roaming: removed %s", dst)
                except NetlinkError as err:
                    if err.code != 3:  # ESRCH: gone already (with its device)
                        raise
        if bridge and want:
            _sysctl(f"/proc/sys/net/ipv4/conf/{self.bridge}/proxy_arp", "1")

    def _announce(self, where: dict[str, Placement], facts: dict[str, tuple[str, str]]) -> None:
        """Gratuitous ARPs for what moved since the last sync (none at start-up)."""
        if self._last is None:
            return
        for uid, p in where.items():
            before = self._last.get(uid)
            if before is None or before.host == p.host:
                continue
            if p.host == self.node_name:  # arrived: its gateway is this bridge now
                if gw := gateway_of(p.ip, facts):
                    garp(self.bridge, gw)
            elif before.host == self.node_name or _within(p.ip, self.pod_cidr):
                garp(self.bridge, p.ip)  # left: the pods here send to the bridge


def garp(ifname: str, ip: str, count: int = 3) -> None:
    """Announce "``ip`` is at ``ifname``'s MAC" on ``ifname`` (an ARP request for itself).
    The MAC comes from netlink: /sys may show another network namespace's devices."""
    with IPRoute() as ipr:
        links = ipr.get_links(ifname=ifname)
        address = links[0].get_attr("IFLA_ADDRESS") if links else None
    if not address:
        return
    mac = bytes.fromhex(address.replace(":", ""))
    sip = socket.inet_aton(ip)
    frame = b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + struct.pack(
        "!HHBBH", 1, 0x0800, 6, 4, 1) + mac + sip + b"\x00" * 6 + sip
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        for _ in range(count):
            s.send(frame)
    log.info("roaming: announced %s on %s", ip, ifname)


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        log.warning("cannot set %s: %s", path, e)
