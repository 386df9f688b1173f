"""The resource metrics API (``metrics.k8s.io/v1beta1``) that `kubectl top` reads.

Upstream serves it from metrics-server through API aggregation; here the API
server answers it itself, asking the host agents' ``/stats/summary`` (with the
same client certificate as for logs and exec) concurrently, with a short
timeout: a host that does not answer is left out, as metrics-server leaves out
a kubelet it cannot scrape, and a pod whose containers have no rate yet (just
started) is left out too.  Read-only: get and list, with label selectors.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from atoll.api import errors, selectors
from atoll.api.kinds import ResourceType
from atoll.api.timestamps import rfc3339
from atoll.apiserver import http
from atoll.apiserver.nodeproxy import NodeProxy
from atoll.apiserver.routing import ResourcePath

GROUP_VERSION = "metrics.k8s.io/v1beta1"
AGENT_TIMEOUT = 3.0


class MetricsAPI:
    def __init__(self, proxy: NodeProxy) -> None:
        self.proxy = proxy
        self.svc = proxy.svc
        self.registry = proxy.registry

    async def handle(self, request: web.Request, rt: ResourceType,
                     path: ResourcePath) -> web.Response:
        if request.method not in ("GET", "HEAD") or path.subresource:
            raise errors.MethodNotAllowed("the server does not allow this method on the "
                                          "requested resource")
        if http.query_bool(request.query, "watch"):
            raise errors.MethodNotAllowed("watch is not supported on the resource metrics API")
        selector = selectors.parse_label_selector(request.query.get("labelSelector", ""))
        if rt.kind == "NodeMetrics":
            items = await self._nodes(path.name, selector)
        else:
            items = await self._pods(path.namespace, path.name, selector)
        if path.name:
            if not items:
                raise errors.NotFound(f'{rt.plural}.metrics.k8s.io "{path.name}" not found',
                                      name=path.name, group="metrics.k8s.io", kind=rt.plural)
            return http.json_response(items[0])
        return http.json_response({"kind": f"{rt.kind}List", "apiVersion": GROUP_VERSION,
                                   "metadata": {}, "items": items})

    # -- nodes -----------------------------------------------------------------------------------
    async def _nodes(self, name: str, selector: selectors.LabelSelector) -> list[dict[str, Any]]:
        nodes = [n for n in self._objects("", "nodes", "")
                 if (not name or n["metadata"]["name"] == name) and
                 selector.matches(n["metadata"].get("labels") or {})]
        summaries = await self._summaries([n["metadata"]["name"] for n in nodes])
        out = []
        for node in nodes:
            summary = summaries.get(node["metadata"]["name"])
            usage = (summary or {}).get("node") or {}
            if "cpu" not in usage:
                continue
            out.append({"kind": "NodeMetrics", "apiVersion": GROUP_VERSION,
                        "metadata": {"name": node["metadata"]["name"],
                                     "creationTimestamp": rfc3339(),
                                     "labels": node["metadata"].get("labels") or {}},
                        "timestamp": usage["time"], "window": _window(usage["window"]),
                        "usage": _usage(usage)})
        return out

    # -- pods --------------------------------------------------------------------------------------
    async def _pods(self, namespace: str, name: str,
                    selector: selectors.LabelSelector) -> list[dict[str, Any]]:
        pods = [p for p in self._objects("", "pods", namespace)
                if (not name or p["metadata"]["name"] == name) and
                selector.matches(p["metadata"].get("labels") or {}) and
                (p.get("status") or {}).get("phase") == "Running"]
        hosts = sorted({(p.get("spec") or {}).get("nodeName") for p in pods} - {None, ""})
        summaries = await self._summaries(hosts)
        by_uid: dict[str, dict[str, Any]] = {}
        for summary in summaries.values():
            for entry in summary.get("pods") or []:
                by_uid[(entry.get("podRef") or {}).get("uid", "")] = entry
        out = []
        for pod in pods:
            entry = by_uid.get(pod["metadata"].get("uid", ""))
            containers = [c for c in (entry or {}).get("containers") or [] if "cpu" in c]
            if not containers:
                continue
            out.append({"kind": "PodMetrics", "apiVersion": GROUP_VERSION,
                        "metadata": {"name": pod["metadata"]["name"],
                                     "namespace": pod["metadata"]["namespace"],
                                     "creationTimestamp": rfc3339(),
                                     "labels": pod["metadata"].get("labels") or {}},
                        "timestamp": max(c["time"] for c in containers),
                        "window": _window(max(c["window"] for c in containers)),
                        "containers": [{"name": c["name"], "usage": _usage(c)}
                                       for c in sorted(containers, key=lambda c: c["name"])]})
        return out

    def _objects(self, group: str, plural: str, namespace: str) -> list[dict[str, Any]]:
        rt = self.registry.lookup(group, "v1", plural)
        assert rt is not None
        return [c.obj for c in self.svc.cacher.list(rt.prefix(namespace))]

    async def _summaries(self, nodes: list[str]) -> dict[str, dict[str, Any]]:
        async def one(node: str) -> tuple[str, dict[str, Any] | None]:
            try:
                url = self.proxy._agent_url(node, {"metadata": {"name": node}, "kind": "Node"})
                async with self.proxy.session().get(
                        f"{url}/stats/summary", ssl=self.proxy.ssl,
                        timeout=aiohttp.ClientTimeout(total=AGENT_TIMEOUT)) as resp:
                    if resp.status != 200:
                        return node, None
                    return node, await resp.json()
            except (errors.ApiError, aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                return node, None  # that host is left out, as metrics-server does
        results = await asyncio.gather(*(one(n) for n in nodes))
        return {node: summary for node, summary in results if summary is not None}


def _usage(stats: dict[str, Any]) -> dict[str, str]:
    cores = int((stats.get("cpu") or {}).get("usageNanoCores") or 0)
    memory = int((stats.get("memory") or {}).get("workingSetBytes") or 0)
    return {"cpu": f"{cores}n", "memory": f"{memory // 1024}Ki"}


def _window(seconds: float) -> str:
    return f"{seconds:.3f}s".replace(".000s", "s")
