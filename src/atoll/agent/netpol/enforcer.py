"""Keeps this host's policy table (``inet atoll_pol_<bridge>``) in step with the cluster's
NetworkPolicies, pods, VirtualMachines and namespaces: any change triggers one coalesced
sync writing what changed in one ``nft`` transaction (``TableSync``).  Pods and VMs on every
host are watched (a peer may run anywhere); only this host's get chains.  A VM of this host
counts with the address its agent gave it (``vm_address``) even before its status says so.
A rule nft cannot carry is left out and reported, a failed sync is a Warning Event and the
Node condition ``atoll.dev/NetworkPolicyHealthy`` (``SyncReport``); neither stops the agent."""

from __future__ import annotations

from typing import Any, Callable

from atoll.agent.host.syncreport import SyncReport
from atoll.agent.host.syncrunner import SyncRunner
from atoll.agent.host.tablesync import TableSync
from atoll.agent.netpol import rules


CONDITION = "atoll.dev/NetworkPolicyHealthy"
FAILED_REASON = "SyncNetworkPolicyFailed"


def table_name(bridge: str) -> str:
    return f"atoll_pol_{bridge}".replace("-", "_")


class PolicyEnforcer:
    def __init__(self, policies: Any, pods: Any, namespaces: Any, table: str, node: str,
                 report: SyncReport | None = None, vms: Any = None,
                 vm_address: Callable[[str], str | None] | None = None) -> None:
        self.policies, self.pods, self.namespaces = policies, pods, namespaces
        self.vms = vms
        #: the address this host's agent gave a VM (by uid), if any
        self.vm_address = vm_address or (lambda uid: None)
        self.table_name, self.node = table, node
        self.report = report or SyncReport(node, CONDITION, FAILED_REASON, None, None)
        self.table = TableSync()
        self.runner = SyncRunner("network policy", self.sync, min_interval=0.05)
        for informer in self.informers:
            informer.add_handler(lambda *_: self.runner.trigger())

    @property
    def informers(self) -> list[Any]:
        return [i for i in (self.policies, self.pods, self.namespaces, self.vms)
                if i is not None]

    async def run(self) -> None:
        self.runner.trigger()
        await self.runner.run()

    async def sync(self) -> None:
        pods = [v for p in self.pods.list() if (v := rules.pod_view(p)) is not None]
        for vm in self.vms.list() if self.vms is not None else []:
            view = rules.vm_view(vm, self.vm_address(vm["metadata"].get("uid", "")))
            if view is not None:
                pods.append(view)
        ns_labels = {n["metadata"]["name"]: dict(n["metadata"].get("labels") or {})
                     for n in self.namespaces.list()}
        problems: list[str] = []
        wanted = rules.table(self.table_name, self.policies.list(), pods, ns_labels, self.node,
                             problems)
        try:
            await self.table.apply(wanted)
        except Exception as e:
            self.report.failed(e)
            raise
        self.report.succeeded(problems)
