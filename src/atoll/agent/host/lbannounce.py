"""Announcing LoadBalancer pool addresses: the host named in a Service's
``network.atoll.dev/announced-by`` answers ARP for its address (MetalLB's layer-2 mode).

The address is added as a /32 to the interface holding this host's own address, so the
kernel answers ARP for it and the Service proxy's rules (which already match the Service's
``status.loadBalancer.ingress``) take the packets; a gratuitous ARP tells the LAN at once.
When the controller moves the address to another host (this one failed, or left the Ready
set), the next sync here removes it.  The addresses this module added are kept in a file, so
a restarted agent removes the ones it no longer announces and never touches anyone else's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from atoll.agent.host.roaming import garp
from atoll.api.network import ANNOUNCER_ANNOTATION, GROUP, POOLS, VERSION
from atoll.api.network.pools import holds
from atoll.client.controller import DONE, Builder, Controller, Result, TemporaryError
from atoll.client.factory import InformerFactory
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)


def announced(services: list[dict[str, Any]], me: str, pools: list[dict[str, Any]]) -> set[str]:
    """The pool addresses this host must answer for: only addresses of a pool, so a Service
    caught between two writes (or written by hand) never has this host claim another host's
    address on the LAN."""
    out = set()
    for svc in services:
        if ((svc.get("metadata") or {}).get("annotations") or {}).get(ANNOUNCER_ANNOTATION) != me:
            continue
        if (svc.get("spec") or {}).get("type") != "LoadBalancer":
            continue
        for entry in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
            ip = entry.get("ip") if isinstance(entry, dict) else None
            if isinstance(ip, str) and any(holds(p, ip) for p in pools):
                out.add(ip)
    return out


class LoadBalancerAnnouncer(Controller):
    name = "lb-announcer"
    backoff = (0.5, 30.0)

    def __init__(self, client: ApiClient, factory: InformerFactory, node_name: str,
                 host_ip: str, state: Path) -> None:
        self.node_name, self.host_ip, self.state = node_name, host_ip, state
        super().__init__(client, factory)

    def declare(self, b: Builder) -> None:
        self.services = b.watches("", "v1", "services", self._changed)
        self.pools = b.watches(GROUP, VERSION, POOLS, self._pool_changed)

    def _changed(self, kind: str, svc: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
        pools = self.pools.list()
        before = announced([old] if old else [], self.node_name, pools)
        after = announced([svc] if kind != "DELETED" else [], self.node_name, pools)
        return ["all"] if before != after else []

    def _pool_changed(self, kind: str, pool: dict[str, Any], old: dict[str, Any] | None
                      ) -> list[str]:
        return ["all"]

    async def on_synced(self) -> None:
        self.queue.add("all")

    async def reconcile(self, key: str) -> Result:
        want = announced(self.services.list(), self.node_name, self.pools.list())
        try:
            await asyncio.to_thread(self._apply, want)
        except (OSError, NetlinkError) as err:
            raise TemporaryError(f"load-balancer addresses: {err}") from err
        return DONE

    def _apply(self, want: set[str]) -> None:
        had = self._load()
        with IPRoute() as ipr:
            index, ifname = self._interface(ipr)
            if index is None:
                raise OSError(f"no interface holds this host's address {self.host_ip}")
            for ip in sorted(want - had):
                try:
                    ipr.addr("add", index=index, address=ip, prefixlen=32)
                except NetlinkError as e:
                    if e.code != 17:  # EEXIST
                        raise
                self._save(had | {ip})
                had = had | {ip}
                garp(ifname, ip)
                log.info("announcing %s on %s", ip, ifname)
            for ip in sorted(had - want):
                try:
                    ipr.addr("del", index=index, address=ip, prefixlen=32)
                except NetlinkError as e:
                    if e.code not in (99, 19):  # EADDRNOTAVAIL, ENODEV: gone already
                        raise
                had = had - {ip}
                self._save(had)
                log.info("no longer announcing %s", ip)

    def _interface(self, ipr: IPRoute) -> tuple[int | None, str]:
        for addr in ipr.get_addr(family=2):
            if addr.get_attr("IFA_ADDRESS") == self.host_ip:
                index = addr["index"]
                link = ipr.get_links(index)
                return index, link[0].get_attr("IFLA_IFNAME") if link else ""
        return None, ""

    def _load(self) -> set[str]:
        try:
            return set(json.loads(self.state.read_text()))
        except (OSError, ValueError, TypeError):
            return set()

    def _save(self, ips: set[str]) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(ips)))
        tmp.rename(self.state)
