"""LoadBalancer Services on hosts without a cloud: every Ready host's address serves each
LoadBalancer Service's ports (k3s's ServiceLB idea, without its per-Service DaemonSet: each
host's Service proxy already answers on the addresses it is told).

A LoadBalancer Service with no ``loadBalancerClass`` (or Atoll's) gets
``status.loadBalancer.ingress`` = the InternalIPs of the Ready, schedulable nodes (those
running an endpoint first when ``externalTrafficPolicy: Local``, as only they answer),
kept current as nodes come and go.  A Service of another class is left to its controller.

With a LoadBalancerPool (``network.atoll.dev``), a Service instead gets one address of the
pool (``lbpools.py`` decides which, and which Ready host announces it over ARP: the
``network.atoll.dev/announced-by`` annotation the hosts follow, moved when that host fails).
"""

from __future__ import annotations

from typing import Any, Iterable

from atoll.api import errors
from atoll.api.network import ANNOUNCER_ANNOTATION, GROUP, POOLS, VERSION, pools
from atoll.client.controller import DONE, Builder, Controller, Result
from atoll.client.events import WARNING
from atoll.controllers import lbpools

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
        self.pools = b.watches(GROUP, VERSION, POOLS, self._all_load_balancers_of_pool)
        #: addresses this controller gave out that its cache may not show yet: {ip: key}
        self._claimed: dict[str, str] = {}

    def _all_load_balancers_of_pool(self, kind: str, pool: Obj, old: Obj | None
                                    ) -> Iterable[str]:
        return [f'{s["metadata"]["namespace"]}/{s["metadata"]["name"]}'
                for s in self.services.list() if is_ours(s)]

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
            for ip in [ip for ip, owner in self._claimed.items() if owner == key]:
                del self._claimed[ip]  # its address is free again
            return DONE
        ns, name = key.split("/", 1)
        endpoint_nodes = {ep.get("nodeName") for sl in self.slices.by_index("namespace", ns)
                          if (sl["metadata"].get("labels") or {})
                          .get("kubernetes.io/service-name") == name
                          for ep in sl.get("endpoints") or []
                          if (ep.get("conditions") or {}).get("ready") is not False}
        pool = lbpools.pool_for(svc, self.pools.list())
        if pool is not None or (svc["metadata"].get("annotations") or {}).get(
                lbpools.POOL_ANNOTATION):
            return await self._from_pool(key, svc, pool, {n for n in endpoint_nodes if n})
        ingress = desired_ingress(svc, self.nodes.list(), {n for n in endpoint_nodes if n})
        taken = self._taken_elsewhere(svc)
        ingress = [i for i in ingress if not any((i["ip"], p) in taken for p in _ports(svc))]
        current = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        path = f"/api/v1/namespaces/{ns}/services/{name}"
        try:
            if (svc["metadata"].get("annotations") or {}).get(ANNOUNCER_ANNOTATION):
                # out of its pool: no host may go on answering ARP for what follows (the
                # hosts' own addresses), so the announcer goes before the ingress changes
                await self.client.patch(path, {"metadata": {"annotations": {
                    ANNOUNCER_ANNOTATION: None}}})
            if current != ingress:
                await self.client.patch(f"{path}/status",
                                        {"status": {"loadBalancer": {"ingress": ingress or None}}})
        except errors.NotFound:
            pass
        return DONE

    async def _from_pool(self, key: str, svc: Obj, pool: Obj | None,
                         endpoint_nodes: set[str]) -> Result:
        """An address of ``pool`` and the Ready host that announces it."""
        ns, name = key.split("/", 1)
        ref = dict(svc, apiVersion="v1", kind="Service")
        if pool is None:
            self.events.record(ref, WARNING, "AllocationFailed", "no LoadBalancerPool named " +
                               str((svc["metadata"].get("annotations") or {})
                                   .get(lbpools.POOL_ANNOTATION)))
            return await self._write(ns, name, svc, None, None)
        try:
            members = pools.addresses(pool)
        except pools.PoolError as e:
            self.events.record(ref, WARNING, "AllocationFailed",
                               f"LoadBalancerPool {pool['metadata']['name']}: {e}")
            return DONE
        for ip, owner in list(self._claimed.items()):
            if owner == key:
                del self._claimed[ip]
        taken = {ip for ip, owner in self._claimed.items() if owner != key}
        for other in self.services.list():
            okey = f'{other["metadata"]["namespace"]}/{other["metadata"]["name"]}'
            if okey != key and is_ours(other):
                taken |= {i.get("ip") for i in ((other.get("status") or {}).get("loadBalancer")
                                                or {}).get("ingress") or []}
        ip = lbpools.choose_address(svc, members, taken)
        if ip is None:
            self.events.record(ref, WARNING, "AllocationFailed",
                               f"LoadBalancerPool {pool['metadata']['name']} has no free address")
            return await self._write(ns, name, svc, None, None)
        self._claimed[ip] = key
        ready = [n["metadata"]["name"] for n in self.nodes.list() if node_address(n)]
        if (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local":
            ready = [n for n in ready if n in endpoint_nodes] or ready
        return await self._write(ns, name, svc, ip, lbpools.announcer(key, ready))

    async def _write(self, ns: str, name: str, svc: Obj, ip: str | None,
                     host: str | None) -> Result:
        ingress = [{"ip": ip, "ipMode": "VIP"}] if ip else []
        current = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        announced = (svc["metadata"].get("annotations") or {}).get(ANNOUNCER_ANNOTATION)
        path = f"/api/v1/namespaces/{ns}/services/{name}"
        want = host if ip else None
        try:
            # a host announces what the ingress holds while the annotation names it: the
            # announcer lets go before the address changes and is named after it has
            if announced is not None and current != ingress:
                await self.client.patch(path, {"metadata": {"annotations": {
                    ANNOUNCER_ANNOTATION: None}}})
                announced = None
            if current != ingress:
                await self.client.patch(f"{path}/status",
                                        {"status": {"loadBalancer": {"ingress": ingress or None}}})
            if announced != want:
                await self.client.patch(path, {"metadata": {"annotations": {
                    ANNOUNCER_ANNOTATION: want}}})
        except errors.NotFound:
            pass
        return DONE
