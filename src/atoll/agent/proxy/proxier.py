"""Keeps this host's Service table in step with the Services and EndpointSlices it watches:
any change triggers one coalesced sync (``SyncRunner``) that writes what changed in one
``nft`` transaction (``TableSync``: a full sync first and after a failure), then drops the
conntrack entries of UDP endpoints that went away (a UDP "connection" would otherwise stick
to a dead backend).  A Service nft cannot take is left out and reported, a failed sync is
a Warning Event and the Node condition ``atoll.dev/ServiceProxyHealthy`` (``SyncReport``);
neither stops the agent."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from atoll.agent.host.syncreport import SyncReport, shorten
from atoll.agent.host.syncrunner import SyncRunner
from atoll.agent.host.tablesync import TableSync
from atoll.agent.proxy import rules

log = logging.getLogger(__name__)
CONDITION = "atoll.dev/ServiceProxyHealthy"
FAILED_REASON = "SyncProxyRulesFailed"


def table_name(bridge: str) -> str:
    return f"atoll_svc_{bridge}".replace("-", "_")


class Proxier:
    def __init__(self, services: Any, slices: Any, settings: rules.ProxySettings,
                 report: SyncReport | None = None) -> None:
        self.services, self.slices = services, slices
        self.settings = settings
        self.report = report or SyncReport(settings.node_name, CONDITION, FAILED_REASON,
                                           None, None)
        self.runner = SyncRunner("service proxy", self.sync, min_interval=0.05)
        self._udp: set[tuple[str, str]] = set()  # (service address, endpoint address)
        self.table = TableSync()
        for informer in (services, slices):
            informer.add_handler(lambda *_: self.runner.trigger())

    async def run(self) -> None:
        self.runner.trigger()
        await self.runner.run()

    async def sync(self) -> None:
        services = self.services.list()
        problems: list[str] = []
        ports: list[rules.ServicePort] = []

        def build(excluded: frozenset[str]) -> rules.Table:
            nonlocal ports
            problems.clear()
            ports = rules.service_ports(
                services, lambda ns, name: self.slices.by_index("service", f"{ns}/{name}"),
                problems, excluded)
            return rules.table(ports, self.settings)

        try:
            refused = await self.table.apply_isolating(build, rules.owner)
        except Exception as e:
            self.report.failed(e)
            raise
        self.report.succeeded(problems + [f"Service {key}: nft refused it: {shorten(why)}"
                                          for key, why in refused.items()])
        udp = {(address, ep.ip) for sp in ports if sp.protocol == "UDP"
               for address in (sp.cluster_ip, *sp.external_ips, *sp.lb_ips)
               for ep in sp.endpoints}
        for service_ip, endpoint_ip in sorted(self._udp - udp):
            await _flush_udp(service_ip, endpoint_ip)
        self._udp = udp


async def _flush_udp(service_ip: str, endpoint_ip: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "conntrack", "-D", "-p", "udp", "--orig-dst", service_ip, "--dst-nat", endpoint_ip,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()  # exit 1 when nothing matched: fine
