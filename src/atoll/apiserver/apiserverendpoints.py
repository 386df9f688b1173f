"""``default/kubernetes``'s endpoints: every live API server, as kube-apiserver's lease
endpoint reconciler keeps them.

Each server holds a Lease in kube-system (labelled ``apiserver.kubernetes.io/identity``,
renewed every ``RENEW_SECONDS``, annotated with the address and port it serves on) and, on
each renewal, writes the Endpoints and the EndpointSlice ``default/kubernetes`` from the
Leases still live.  A server that stops cleanly takes its Lease (and so its address) away at
once; one that dies drops out when its Lease runs out, ``LEASE_SECONDS`` later.  Renewing on a
timer is what a lease is; everything else here reacts to what the store holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from atoll._kits.netaddr import default_route_address
from atoll.api import errors
from atoll.api.resources.coordination_v1 import LEASES
from atoll.api.resources.core_v1 import ENDPOINTS
from atoll.api.resources.discovery_v1 import ENDPOINTSLICES
from atoll.api.strategy import WriteOptions
from atoll.api.timestamps import parse_rfc3339, rfc3339

log = logging.getLogger(__name__)
OPTS = WriteOptions(field_manager="atoll-apiserver")
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
ENDPOINT_ANNOTATION = "atoll.dev/apiserver-endpoint"
RENEW_SECONDS = 10.0
LEASE_SECONDS = 15
Obj = dict[str, Any]


def advertise_address(bind_address: str) -> str:
    """A bound address is what clients reach; a wildcard bind, the default route's source."""
    if bind_address in ("", "0.0.0.0", "::"):
        return default_route_address()
    return bind_address


def live_endpoints(leases: list[Obj], now: float) -> list[tuple[str, int]]:
    """(address, port) of every server whose Lease has not run out, sorted."""
    out = set()
    for lease in leases:
        meta, spec = lease["metadata"], lease.get("spec") or {}
        if (meta.get("labels") or {}).get(IDENTITY_LABEL) != "kube-apiserver":
            continue
        renewed = parse_rfc3339(spec.get("renewTime"))
        if renewed is None or renewed + float(spec.get("leaseDurationSeconds") or 0) < now:
            continue
        address, _, port = ((meta.get("annotations") or {}).get(ENDPOINT_ANNOTATION) or "") \
            .rpartition(":")
        if address and port.isdigit():
            out.add((address, int(port)))
    return sorted(out)


def endpoints_body(live: list[tuple[str, int]]) -> Obj:
    by_port: dict[int, list[str]] = {}
    for address, port in live:
        by_port.setdefault(port, []).append(address)
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": a} for a in addresses],
                         "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
                        for port, addresses in sorted(by_port.items())]}


def slice_body(live: list[tuple[str, int]]) -> Obj:
    """One slice has one port list: servers on another port than the first are left to the
    Endpoints (upstream's servers all share one port)."""
    port = live[0][1] if live else 443
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}}
                          for a, p in live if p == port],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


class APIServerEndpoints:
    def __init__(self, svc: Any, address: str, port: int,
                 ensure_service: Any = None) -> None:
        self.svc = svc
        #: puts default/kubernetes back when someone deleted it (upstream re-creates it too)
        self.ensure_service = ensure_service
        self.endpoint = f"{address}:{port}"
        self.name = "apiserver-" + hashlib.sha256(self.endpoint.encode()).hexdigest()[:16]

    async def run(self) -> None:
        while True:
            try:
                await self.renew()
                await self.reconcile()
            except errors.ApiError as e:
                log.warning("kubernetes endpoints: %s", e)
            await asyncio.sleep(RENEW_SECONDS)

    async def stop(self) -> None:
        """Leave: this server's address goes from the endpoints now, not at lease expiry."""
        try:
            await self.svc.delete(LEASES, "kube-system", self.name, opts=OPTS)
            await self.reconcile()
        except errors.ApiError as e:
            log.info("kubernetes endpoints at stop: %s", e)

    async def renew(self) -> None:
        now = rfc3339(digits=6)
        if self.svc.read(LEASES, "kube-system", self.name) is None:
            try:
                await self.svc.create(LEASES, "kube-system", {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": "kube-system",
                                 "labels": {IDENTITY_LABEL: "kube-apiserver"},
                                 "annotations": {ENDPOINT_ANNOTATION: self.endpoint}},
                    "spec": {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                             "acquireTime": now, "renewTime": now}}, OPTS)
                return
            except errors.AlreadyExists:
                pass

        def renewed(lease: Obj) -> Obj:
            lease.setdefault("spec", {})["renewTime"] = now
            lease["spec"]["leaseDurationSeconds"] = LEASE_SECONDS
            return lease
        await self.svc.guaranteed_update(LEASES, "kube-system", self.name, renewed, OPTS)

    async def reconcile(self) -> None:
        if self.ensure_service is not None:
            await self.ensure_service()
        leases = [c.obj for c in self.svc.read_list(LEASES, "kube-system")]
        live = live_endpoints(leases, time.time())
        await self._put(ENDPOINTS, endpoints_body(live), ("subsets",))
        await self._put(ENDPOINTSLICES, slice_body(live), ("endpoints", "ports"))

    async def _put(self, rt: Any, body: Obj, fields: tuple[str, ...]) -> None:
        current = self.svc.read(rt, "default", "kubernetes")
        if current is None:
            try:
                await self.svc.create(rt, "default", body, OPTS)
            except errors.AlreadyExists:
                pass  # another server wrote it first; the next renewal compares
            return
        if all(current.obj.get(f) == body.get(f) for f in fields):
            return

        def put(obj: Obj) -> Obj:
            for f in fields:
                obj[f] = body[f]
            obj["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}),
                                         **body["metadata"]["labels"]}
            return obj
        await self.svc.guaranteed_update(rt, "default", "kubernetes", put, OPTS)
