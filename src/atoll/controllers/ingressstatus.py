"""The address of every Ingress of class ``atoll``: ``status.loadBalancer.ingress`` copied
from ``kube-system/atoll-ingress``, the LoadBalancer Service in front of the hosts' routers
(as ingress-nginx's ``--publish-service``)."""

from __future__ import annotations

from typing import Any, Iterable

from atoll.api import errors
from atoll.api.resources.networking_v1 import ingress_is_atolls
from atoll.client.controller import DONE, Builder, Controller, Result

PUBLISHED = "kube-system/atoll-ingress"
Obj = dict[str, Any]


class IngressStatusController(Controller):
    """Ingresses (primary); the published Service's changes re-queue every Ingress."""

    name = "ingress-status"
    default_workers = 1
    events_component = "ingress-status-controller"

    def declare(self, b: Builder) -> None:
        self.ingresses = b.primary("networking.k8s.io", "v1", "ingresses")
        self.services = b.watches("", "v1", "services", self._all_ingresses)

    def _all_ingresses(self, kind: str, svc: Obj, old: Obj | None) -> Iterable[str]:
        meta = svc["metadata"]
        if f'{meta.get("namespace")}/{meta.get("name")}' != PUBLISHED:
            return ()
        return [f'{i["metadata"]["namespace"]}/{i["metadata"]["name"]}'
                for i in self.ingresses.list()]

    async def reconcile(self, key: str) -> Result:
        ing = self.ingresses.get(key)
        if ing is None or not ingress_is_atolls(ing):
            return DONE
        svc = self.services.get(PUBLISHED)
        published = (((svc or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress")
        wanted = [{"ip": i["ip"]} for i in published or [] if isinstance(i, dict) and i.get("ip")]
        current = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if current == wanted:
            return DONE
        ns, name = key.split("/", 1)
        try:
            await self.client.patch(
                f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}/status",
                {"status": {"loadBalancer": {"ingress": wanted or None}}})
        except errors.NotFound:
            pass
        return DONE
