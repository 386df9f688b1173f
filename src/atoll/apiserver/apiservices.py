"""APIService upkeep: local APIServices for what this server serves, the availability check of
Service-backed ones, and the ``extension-apiserver-authentication`` ConfigMap.

It runs inside the API server, as upstream's kube-aggregator controllers do, rather than in
the controller manager: the check dials backends with the front-proxy client certificate,
whose key never leaves the server's pki, and its verdict gates this server's own proxying and
discovery (``apiserver.aggregator``), so each API server judges the backends it will talk to.

- Every served group-version has a local APIService (``spec.service`` nil), ``Available``
  with reason ``Local``, labelled ``kube-aggregator.kubernetes.io/automanaged`` (``onstart``
  for built-ins, ``true`` for CRD group-versions, which go away with their CRD).
- A Service-backed APIService is checked on every change to it, its Service or Endpoints,
  and every 30 s: ``GET /apis/<group>/<version>`` at a ready backend must answer 2xx.  The
  condition's reasons are upstream's: ``Passed``, ``ServiceNotFound``, ``MissingEndpoints``,
  ``FailedDiscoveryCheck``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import orjson

from atoll.api import errors
from atoll.api.resources.apiregistration_v1 import APISERVICES
from atoll.api.timestamps import rfc3339
from atoll.apiserver.aggregator import Aggregator
from atoll.apiserver.objects import ObjectService, WriteOptions
from atoll.apiserver.pki import CertPair

log = logging.getLogger(__name__)

AUTOMANAGED = "kube-aggregator.kubernetes.io/automanaged"
CHECK_INTERVAL = 30.0
CHECK_TIMEOUT = 5.0
AUTH_CONFIGMAP = "extension-apiserver-authentication"
FRONT_PROXY_CLIENT = "front-proxy-client"
#: upstream's priorities for the built-in groups (group minimum, version)
PRIORITIES: dict[str, tuple[int, int]] = {
    "": (18000, 1), "apiregistration.k8s.io": (17800, 15), "apps": (17800, 15),
    "events.k8s.io": (17750, 15), "authentication.k8s.io": (17700, 15),
    "authorization.k8s.io": (17600, 15), "autoscaling": (17500, 15), "batch": (17400, 15),
    "certificates.k8s.io": (17300, 15), "networking.k8s.io": (17200, 15),
    "policy": (17100, 15), "rbac.authorization.k8s.io": (17000, 15),
    "storage.k8s.io": (16800, 15), "admissionregistration.k8s.io": (16700, 15),
    "coordination.k8s.io": (16500, 15), "apiextensions.k8s.io": (16400, 15),
    "metrics.k8s.io": (100, 100),
}
OPTS = WriteOptions(field_manager="atoll-apiserver")
#: what a check depends on: APIServices, Services, their Endpoints (and CRDs, for local ones)
WATCHED = (APISERVICES.prefix(""), "/registry/core/services/", "/registry/core/endpoints/",
           "/registry/apiextensions.k8s.io/customresourcedefinitions/")


def local_apiservice(group: str, version: str, custom: bool) -> dict[str, Any]:
    gpm, vp = PRIORITIES.get(group, (1000, 100))
    if group == "autoscaling" and version == "v2":
        vp = 30
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": f"{version}.{group}",
                         "labels": {AUTOMANAGED: "true" if custom else "onstart"}},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": gpm,
                     "versionPriority": vp}}


def condition(status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": "Available", "status": status, "reason": reason, "message": message}


def authentication_configmap(cluster_ca: bytes, front_proxy_ca: bytes) -> dict[str, Any]:
    """What extension API servers read to trust this server's clients and its front proxy."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": AUTH_CONFIGMAP, "namespace": "kube-system"},
            "data": {"client-ca-file": cluster_ca.decode(),
                     "requestheader-client-ca-file": front_proxy_ca.decode(),
                     "requestheader-allowed-names": json.dumps([FRONT_PROXY_CLIENT]),
                     "requestheader-username-headers": json.dumps(["X-Remote-User"]),
                     "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
                     "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"])}}


class APIServices:
    def __init__(self, svc: ObjectService, aggregator: Aggregator) -> None:
        self.svc = svc
        self.registry = aggregator.registry
        self.aggregator = aggregator
        self._wake = asyncio.Event()
        self._registry_generation = -1
        svc.cacher.listeners.append(self._on_event)

    def _on_event(self, ev: Any) -> None:
        if ev.key.startswith(WATCHED):
            self._wake.set()

    # -- start-up --------------------------------------------------------------------------
    async def publish_authentication(self, cluster_ca: CertPair, front_proxy_ca: CertPair) -> None:
        wanted = authentication_configmap(cluster_ca.cert_pem(), front_proxy_ca.cert_pem())
        cm = self.registry.lookup("", "v1", "configmaps")
        assert cm is not None
        try:
            if self.svc.read(cm, "kube-system", AUTH_CONFIGMAP) is None:
                await self.svc.create(cm, "kube-system", wanted, OPTS)
                return

            def put(cur: dict[str, Any]) -> dict[str, Any]:
                cur["data"] = {**(cur.get("data") or {}), **wanted["data"]}
                return cur
            await self.svc.guaranteed_update(cm, "kube-system", AUTH_CONFIGMAP, put, OPTS)
        except (errors.AlreadyExists, errors.Conflict) as e:
            log.info("%s: %s (another server wrote it)", AUTH_CONFIGMAP, e)

    async def register_local(self) -> None:
        """A local APIService per served group-version; CRD ones removed with their CRD."""
        served: set[tuple[str, str]] = set()
        for group, versions in self.registry.groups().items():
            for version in versions:
                served.add((group, version))
                if self.svc.read(APISERVICES, "", f"{version}.{group}") is not None:
                    continue
                custom = all(rt.custom is not None
                             for rt in self.registry.resources(group, version))
                try:
                    await self.svc.create(APISERVICES, "",
                                          local_apiservice(group, version, custom), OPTS)
                except errors.AlreadyExists:
                    pass
        for cached in self.svc.read_list(APISERVICES):
            obj = cached.obj
            spec = obj.get("spec") or {}
            if (obj["metadata"].get("labels") or {}).get(AUTOMANAGED) == "true" and \
                    spec.get("service") is None and \
                    (spec.get("group", ""), spec.get("version", "")) not in served:
                try:
                    await self.svc.delete(APISERVICES, "", obj["metadata"]["name"], opts=OPTS)
                except errors.NotFound:
                    pass

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                if self.registry.generation != self._registry_generation:
                    self._registry_generation = self.registry.generation
                    await self.register_local()
                await self.check_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("APIService availability check failed")
            self._wake.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that
            # arrives as the event is set, and the server's stop would wait forever
            try:
                async with asyncio.timeout(CHECK_INTERVAL):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def check_all(self) -> None:
        items = [c.obj for c in self.svc.read_list(APISERVICES)]
        results = await asyncio.gather(*(self.check(o) for o in items), return_exceptions=True)
        for obj, result in zip(items, results):
            if isinstance(result, BaseException):
                log.warning("APIService %s: %s", obj["metadata"]["name"], result)
                continue
            await self._set(obj, result)

    async def check(self, obj: dict[str, Any]) -> dict[str, Any]:
        spec = obj.get("spec") or {}
        group, version = spec.get("group", ""), spec.get("version", "")
        ref = spec.get("service")
        if not isinstance(ref, dict):
            return condition("True", "Local", "Local APIServices are always available")
        ns, name = ref.get("namespace"), ref.get("name")
        try:
            base, ctx, server_name = self.aggregator.backend(obj)
        except errors.NotFound:
            return condition("False", "ServiceNotFound",
                             f'service/{name} in "{ns}" is not present')
        except errors.ServiceUnavailable:
            return condition("False", "MissingEndpoints",
                             f"endpoints for service/{name} in \"{ns}\" have no addresses with "
                             f"port {ref.get('port') or 443}")
        path = f"/apis/{group}/{version}" if group else "/api/v1"
        url = base + path
        failing = f"failing or missing response from {url}"
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                async with self.aggregator.session().get(
                        url, ssl=ctx, server_hostname=server_name,
                        headers={"Accept": "application/json",
                                 "X-Remote-User": "system:kube-aggregator",
                                 "X-Remote-Group": "system:masters"}) as resp:
                    body = await resp.content.read(4 * 1024 * 1024)
                    status = resp.status
        except TimeoutError:
            return condition("False", "FailedDiscoveryCheck",
                             f'{failing}: Get "{url}": context deadline exceeded')
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return condition("False", "FailedDiscoveryCheck", f'{failing}: Get "{url}": {e}')
        if not 200 <= status < 300:
            return condition("False", "FailedDiscoveryCheck",
                             f"{failing}: bad status from {url}: {status}")
        try:
            listed = orjson.loads(body)
            if isinstance(listed, dict):
                self.aggregator.resources[f"{group}/{version}"] = listed
        except orjson.JSONDecodeError:
            pass
        return condition("True", "Passed", "all checks passed")

    async def _set(self, obj: dict[str, Any], wanted: dict[str, Any]) -> None:
        current = next((c for c in (obj.get("status") or {}).get("conditions") or []
                        if isinstance(c, dict) and c.get("type") == "Available"), None)
        if current is not None and all(current.get(k) == wanted[k]
                                       for k in ("status", "reason", "message")):
            return
        now = rfc3339()

        def put(cur: dict[str, Any]) -> dict[str, Any]:
            status = cur.setdefault("status", {})
            conds = [c for c in status.get("conditions") or []
                     if isinstance(c, dict) and c.get("type") != "Available"]
            old = next((c for c in status.get("conditions") or []
                        if isinstance(c, dict) and c.get("type") == "Available"), None)
            since = old.get("lastTransitionTime") if old is not None and \
                old.get("status") == wanted["status"] else now
            conds.append({**wanted, "lastTransitionTime": since or now})
            status["conditions"] = conds
            return cur
        try:
            await self.svc.guaranteed_update(APISERVICES, "", obj["metadata"]["name"], put, OPTS,
                                             subresource="status")
        except errors.NotFound:
            pass
