"""Keeps this host's policy table (``inet atoll_pol_<bridge>``) in step with the cluster's
NetworkPolicies, pods and namespaces: any change triggers one coalesced sync replacing the
table in one ``nft`` transaction.  Pods on every host are watched (a peer may run anywhere);
only this host's pods get chains."""

from __future__ import annotations

from typing import Any

from atoll.agent.host import nft
from atoll.agent.host.syncrunner import SyncRunner
from atoll.agent.netpol import rules


def table_name(bridge: str) -> str:
    return f"atoll_pol_{bridge}".replace("-", "_")


class PolicyEnforcer:
    def __init__(self, policies: Any, pods: Any, namespaces: Any, table: str, node: str) -> None:
        self.policies, self.pods, self.namespaces = policies, pods, namespaces
        self.table, self.node = table, node
        self.runner = SyncRunner("network policy", self.sync, min_interval=0.05)
        self._applied = ""  # the script last applied: an unchanged one is not sent again
        for informer in (policies, pods, namespaces):
            informer.add_handler(lambda *_: self.runner.trigger())

    @property
    def informers(self) -> list[Any]:
        return [self.policies, self.pods, self.namespaces]

    async def run(self) -> None:
        self.runner.trigger()
        await self.runner.run()

    async def sync(self) -> None:
        pods = [v for p in self.pods.list() if (v := rules.pod_view(p)) is not None]
        ns_labels = {n["metadata"]["name"]: dict(n["metadata"].get("labels") or {})
                     for n in self.namespaces.list()}
        script = rules.script(self.table, self.policies.list(), pods, ns_labels, self.node)
        if script != self._applied:  # most pod events (status, readiness) change no rule
            await nft.run(script)
            self._applied = script
