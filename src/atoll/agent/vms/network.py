"""A VM's NIC on the host's workload network: a tap device on the pods' bridge.

VMs and pods share one bridge and one address range, so a VM reaches pods and
pods reach VMs; addresses come from the same ``LocalIPAM`` leases (keyed by the
VM's uid): the next free one, or the static address the VM asks for
(``InterfaceRequest``, read from its spec by ``launch.interface_request``) if it
is free.  The tap is persistent and named after the VM, so a restarted QEMU
(or one adopted by a new agent) finds the same device; it goes with the VM.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from atoll.agent.host.network import LocalIPAM, NetworkError


@dataclass(frozen=True)
class VMAddress:
    ip: str
    prefixlen: int
    gateway: str
    mac: str
    tap: str
    #: a default route via ``gateway`` (``gateway4: None`` asks for none)
    route: bool = True

    @property
    def netmask(self) -> str:
        return str(ipaddress.ip_network(f"0.0.0.0/{self.prefixlen}").netmask)


@dataclass(frozen=True)
class InterfaceRequest:
    """What a VM's spec asks of its NIC on the pod network."""

    ip: str | None = None  # a static address; None: the next free one
    route: bool = True


class AddressUnavailable(Exception):
    """The static address a VM asks for is taken or not this host's to give."""


def tap_name(vm_uid: str) -> str:
    return "vm" + vm_uid.replace("-", "")[:13]


def mac_address(vm_uid: str) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 prefix."""
    h = hashlib.sha256(vm_uid.encode()).digest()
    return "52:54:00:%02x:%02x:%02x" % (h[0], h[1], h[2])


class VMNetwork:
    def __init__(self, ipam: LocalIPAM, bridge: str) -> None:
        self.ipam = ipam
        self.bridge = bridge

    async def attach(self, vm_uid: str, request: InterfaceRequest | None = None) -> VMAddress:
        """The VM's address and a tap on the bridge, made if missing (idempotent)."""
        request = request or InterfaceRequest()
        if request.ip is not None:
            try:
                ip = self.ipam.claim(vm_uid, request.ip)
            except NetworkError as e:
                raise AddressUnavailable(str(e)) from None
        else:
            ip = self.ipam.allocate(vm_uid)
        tap = tap_name(vm_uid)
        await asyncio.to_thread(self._ensure_tap, tap)
        return VMAddress(ip=ip, prefixlen=self.ipam.network.prefixlen,
                         gateway=str(self.ipam.gateway), mac=mac_address(vm_uid), tap=tap,
                         route=request.route)

    async def attach_moved(self, vm_uid: str, ip: str, prefixlen: int, gateway: str,
                           route: bool) -> VMAddress:
        """The NIC of a VM arriving by live migration: it keeps the address it had.  One of
        this host's own is leased again (the VM comes back); another host's is not leased
        here (routes for it follow the VM: host/roaming.py)."""
        if ipaddress.ip_address(ip) in self.ipam.network:
            try:
                self.ipam.claim(vm_uid, ip)
            except NetworkError as e:
                raise AddressUnavailable(str(e)) from None
        tap = tap_name(vm_uid)
        await asyncio.to_thread(self._ensure_tap, tap)
        return VMAddress(ip=ip, prefixlen=prefixlen, gateway=gateway, mac=mac_address(vm_uid),
                         tap=tap, route=route)

    async def detach(self, vm_uid: str, *, keep_lease: bool = False) -> None:
        """Remove the VM's tap and release its address (``keep_lease``: the VM lives on
        elsewhere with this host's address, which no one else may be given meanwhile)."""
        await asyncio.to_thread(self._delete_link, tap_name(vm_uid))
        if not keep_lease:
            self.ipam.release(vm_uid)

    def _ensure_tap(self, tap: str) -> None:
        with IPRoute() as ipr:
            bridge = self._ensure_bridge(ipr)
            if not ipr.link_lookup(ifname=tap):
                ipr.link("add", ifname=tap, kind="tuntap", mode="tap")
            index = ipr.link_lookup(ifname=tap)[0]
            ipr.link("set", index=index, master=bridge, state="up")

    def _ensure_bridge(self, ipr: IPRoute) -> int:
        """The bridge as the CNI bridge plugin makes it (gateway address, up), if no pod has yet."""
        found = ipr.link_lookup(ifname=self.bridge)
        if not found:
            try:
                ipr.link("add", ifname=self.bridge, kind="bridge")
            except NetlinkError as e:
                if e.code != 17:  # EEXIST: a pod's CNI ADD made it just now
                    raise
            found = ipr.link_lookup(ifname=self.bridge)
        index = found[0]
        gateway = str(self.ipam.gateway)
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=2)}
        if gateway not in have:
            try:
                ipr.addr("add", index=index, address=gateway, prefixlen=self.ipam.network.prefixlen)
            except NetlinkError as e:
                if e.code != 17:
                    raise
        ipr.link("set", index=index, state="up")
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        return index

    @staticmethod
    def _delete_link(name: str) -> None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if found:
                try:
                    ipr.link("del", index=found[0])
                except NetlinkError as e:
                    if e.code != 19:  # ENODEV: already gone
                        raise
