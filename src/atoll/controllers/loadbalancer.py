"""LoadBalancer Services on hosts without a cloud: every Ready host's address serves each
LoadBalancer Service's ports (k3s's ServiceLB idea, without its per-Service DaemonSet: each
host's Service proxy already answers on the addresses it is told).

A LoadBalancer Service with no ``loadBalancerClass`` (or Atoll's) gets
``status.loadBalancer.ingress`` = the InternalIPs of the Ready, schedulable nodes (those
running an endpoint first when ``externalTrafficPolicy: Local``, as only they answer),
kept current as nodes come and go.  A Service of another class is left to its controller.
"""

from __future__ import annotations

from typing import Any, Iterable

from atoll.api import errors
from atoll.client.controller import DONE, Builder, Controller, Result

CLASS = "atoll.dev/service-lb"
Obj = dict[str, Any]


def is_ours(svc: Obj) -> bool:
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") in (None, CLASS)


def node_address(node: Obj) -> str | None:
    status, spec = node.get("status") or {}, node.get("spec") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [] if isinstance(c, dict))
    if not ready or spec.get("unschedulable"):
        return None
    return next((a.get("address") for a in status.get("addresses") or []
                 if isinstance(a, dict) and a.get("type") == "InternalIP"), None)


def desired_ingress(svc: Obj, nodes: Iterable[Obj], endpoint_nodes: set[str]) -> list[Obj]:
    addresses = sorted((n["metadata"]["name"], ip) for n in nodes
                       if (ip := node_address(n)) is not None)
    if (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local":
        local = [a for a in addresses if a[0] in endpoint_nodes]
        addresses = local or addresses
    return [{"ip": ip, "ipMode": "VIP"} for _, ip in addresses]


def _ports(svc: Obj) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p.get("port")) for p in
            (svc.get("spec") or {}).get("ports") or [] if isinstance(p, dict)}


def _age_key(svc: Obj) -> tuple[str, str, str]:
    meta = svc["metadata"]
    return (meta.get("creationTimestamp", ""), meta.get("namespace", ""), meta.get("name", ""))


class LoadBalancerController(Controller):
    """Services (primary); any node change re-queues every LoadBalancer Service; slice
    changes re-queue their Service (for the Local policy)."""

    name = "service-lb"
    default_workers = 1
    events_component = "service-lb-controller"

    def declare(self, b: Builder) -> None:
        self.services = b.primary("", "v1", "services")
        b.watches("", "v1", "services", self._other_load_balancers)
        self.nodes = b.watches("", "v1", "nodes", self._all_load_balancers)
        self.slices = b.watches("discovery.k8s.io", "v1", "endpointslices", self._service_of)

    def _other_load_balancers(self, kind: str, svc: Obj, old: Obj | None) -> Iterable[str]:
        """A LoadBalancer going (or changing ports) may free a host port for another."""
        if kind != "DELETED" and old is not None and is_ours(svc) == is_ours(old) and \
                _ports(svc) == _ports(old) and \
                (svc.get("status") or {}).get("loadBalancer") == \
                (old.get("status") or {}).get("loadBalancer"):
            return ()
        return [f'{s["metadata"]["namespace"]}/{s["metadata"]["name"]}'
                for s in self.services.list() if is_ours(s)]

    def _all_load_balancers(self, kind: str, node: Obj, old: Obj | None) -> Iterable[str]:
        if old is not None and node_address(node) == node_address(old):
            return ()
        return [f'{s["metadata"]["namespace"]}/{s["metadata"]["name"]}'
                for s in self.services.list() if is_ours(s)]

    def _taken_elsewhere(self, svc: Obj) -> set[tuple[str, tuple[str, int]]]:
        """(address, (protocol, port)) that older LoadBalancer Services hold: a host port
        serves one Service, so a later one waits (pending) as under k3s's ServiceLB."""
        mine = _age_key(svc)
        taken = set()
        for other in self.services.list():
            if not is_ours(other) or _age_key(other) >= mine:
                continue
            for entry in ((other.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
                for port in _ports(other):
                    taken.add((entry.get("ip"), port))
        return taken

    def _service_of(self, kind: str, sl: Obj, old: Obj | None) -> Iterable[str]:
        name = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        return [f'{sl["metadata"].get("namespace")}/{name}'] if name else []

    async def reconcile(self, key: str) -> Result:
        svc = self.services.get(key)
        if svc is None or not is_ours(svc):
            return DONE
        ns, name = key.split("/", 1)
        endpoint_nodes = {ep.get("nodeName") for sl in self.slices.by_index("namespace", ns)
                          if (sl["metadata"].get("labels") or {})
                          .get("kubernetes.io/service-name") == name
                          for ep in sl.get("endpoints") or []
                          if (ep.get("conditions") or {}).get("ready") is not False}
        ingress = desired_ingress(svc, self.nodes.list(), {n for n in endpoint_nodes if n})
        taken = self._taken_elsewhere(svc)
        ingress = [i for i in ingress if not any((i["ip"], p) in taken for p in _ports(svc))]
        current = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if current == ingress:
            return DONE
        try:
            await self.client.patch(f"/api/v1/namespaces/{ns}/services/{name}/status",
                                    {"status": {"loadBalancer": {"ingress": ingress or None}}})
        except errors.NotFound:
            pass
        return DONE
