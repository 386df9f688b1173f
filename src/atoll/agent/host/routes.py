"""Routes to the other hosts' pod ranges: pods on different hosts reach each other.

Each Node says its pod range (``spec.podCIDR``) and address (``InternalIP``);
on a flat network between hosts, a route "that range via that host" on every
other host is all it takes (flannel's host-gw, Calico without BGP).  The
routes carry their own protocol number, so the ones left by a previous agent,
or for a host that is gone, are found and removed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from atoll.client.controller import DONE, Builder, Controller, Result, TemporaryError
from atoll.client.factory import InformerFactory
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
#: rtm_protocol of the routes this module owns (an unused number; 4 = static, 186+ = routing
#: daemons)
PROTO = 77


def desired_routes(nodes: list[dict[str, Any]], me: str, my_ip: str,
                   my_cidr: str) -> dict[str, str]:
    """{pod range: via address} for every other host that has a range and an address."""
    out: dict[str, str] = {}
    mine = ipaddress.ip_network(my_cidr, strict=False)
    for node in nodes:
        if node["metadata"].get("name") == me:
            continue
        cidr = (node.get("spec") or {}).get("podCIDR")
        ip = next((a.get("address") for a in (node.get("status") or {}).get("addresses") or []
                   if a.get("type") == "InternalIP"), None)
        if not cidr or not ip or ip == my_ip:
            continue  # another agent on this very host shares its routing table
        try:
            net = ipaddress.ip_network(cidr, strict=False)
            ipaddress.ip_address(ip)
        except ValueError:
            continue
        if net.version != 4 or net.overlaps(mine):
            continue
        out[str(net)] = ip
    return out


class PodRoutes(Controller):
    """Keeps this host's routes to the other hosts' pod ranges in step with the Nodes: one
    key for the whole table, since a sync rewrites it at once."""

    name = "pod-routes"
    backoff = (0.5, 30.0)

    def __init__(self, client: ApiClient, factory: InformerFactory, node_name: str,
                 host_ip: str, pod_cidr: str) -> None:
        self.node_name = node_name
        self.host_ip = host_ip
        self.pod_cidr = pod_cidr
        super().__init__(client, factory)

    def declare(self, b: Builder) -> None:
        self.nodes = b.watches("", "v1", "nodes", lambda kind, node, old: ["all"])

    async def on_synced(self) -> None:
        self.queue.add("all")  # the routes as they should be now, even with no node changing

    async def reconcile(self, key: str) -> Result:
        try:
            await asyncio.to_thread(self.sync)
        except (OSError, NetlinkError) as err:
            raise TemporaryError(f"pod routes: {err}") from err
        return DONE

    def sync(self) -> None:
        want = desired_routes(self.nodes.list(), self.node_name, self.host_ip, self.pod_cidr)
        with IPRoute() as ipr:
            have: dict[str, str] = {}
            for route in ipr.get_routes(family=2, proto=PROTO):
                dst = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
                have[dst] = route.get_attr("RTA_GATEWAY") or ""
            for dst, via in want.items():
                if have.get(dst) != via:
                    try:
                        ipr.route("replace", dst=dst, gateway=via, proto=PROTO)
                        log.info("pod routes: %s via %s", dst, via)
                    except NetlinkError as err:
                        log.warning("pod routes: cannot route %s via %s: %s (is that host on "
                                    "this host's network?)", dst, via, err)
            for dst in set(have) - set(want):
                try:
                    ipr.route("del", dst=dst, proto=PROTO)
                    log.info("pod routes: removed %s", dst)
                except NetlinkError:
                    pass
