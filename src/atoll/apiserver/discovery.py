"""Discovery documents: legacy (/api, /apis, per group-version) and aggregated (v2).

Legacy is the default: kopf, kr8s and the Python clients send no aggregated
Accept.  client-go asks for ``apidiscovery.k8s.io/v2`` on both /api and /apis
and uses it only if both answer in that format, so both do.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from atoll.api.kinds import ResourceType
from atoll.apiserver import http
from atoll.apiserver.registry import Registry

AGGREGATED_CT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_CT_BETA = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


def aggregated_version(request: web.Request) -> str:
    """'v2' / 'v2beta1' when the client prefers aggregated discovery, else ''."""
    accept = request.headers.get("Accept", "")
    for media in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip()
                  for p in media.split(";")[1:] if "=" in p}
        if params.get("as") == "APIGroupDiscoveryList" and params.get("g") == "apidiscovery.k8s.io":
            if params.get("v") in ("v2", "v2beta1"):
                return params["v"]
        elif media.strip().split(";")[0] in ("application/json", "*/*"):
            return ""
    return ""


def _resource_entry(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
        "kind": rt.kind, "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    if rt.storage_version or rt.custom is None:
        entry["storageVersionHash"] = _hash(rt)
    return entry


def _hash(rt: ResourceType) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(f"{rt.group}/{rt.storage_version or rt.version}/{rt.kind}".encode())
    return base64.b64encode(digest.digest()[:8]).decode()


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for rt in registry.resources(group, version):
        resources.append(_resource_entry(rt))
        for sub in rt.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{rt.plural}/{sub.name}", "singularName": "",
                "namespaced": rt.namespaced, "kind": sub.kind or rt.kind, "verbs": list(sub.verbs),
            }
            if sub.group is not None:
                sub_entry["group"] = sub.group
                sub_entry["version"] = sub.version
            resources.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}


def _group(registry: Registry, group: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": vs, "preferredVersion": vs[0]}


def api_versions(request: web.Request) -> dict[str, Any]:
    host = request.host or "127.0.0.1"
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}]}


def group_list(registry: Registry) -> dict[str, Any]:
    groups = [_group(registry, g, vs) for g, vs in registry.groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(registry: Registry, name: str) -> dict[str, Any] | None:
    versions = registry.groups().get(name)
    if not name or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(registry, name, versions)}


def aggregated(registry: Registry, core: bool, version: str) -> dict[str, Any]:
    """An APIGroupDiscoveryList for /api (core only) or /apis (every named group)."""
    items = []
    for group_name, versions in registry.groups().items():
        if core != (group_name == ""):
            continue
        vitems = []
        for v in versions:
            resources = []
            for rt in registry.resources(group_name, v):
                res: dict[str, Any] = {
                    "resource": rt.plural,
                    "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                    "scope": "Namespaced" if rt.namespaced else "Cluster",
                    "singularResource": rt.singular,
                    "verbs": list(rt.verbs),
                }
                if rt.short_names:
                    res["shortNames"] = list(rt.short_names)
                if rt.categories:
                    res["categories"] = list(rt.categories)
                if rt.subresources:
                    res["subresources"] = [{
                        "subresource": s.name,
                        "responseKind": {"group": s.group if s.group is not None else rt.group,
                                         "version": s.version or rt.version,
                                         "kind": s.kind or rt.kind},
                        "verbs": list(s.verbs)} for s in rt.subresources]
                resources.append(res)
            vitems.append({"version": v, "resources": resources, "freshness": "Current"})
        items.append({"metadata": {"name": group_name}, "versions": vitems})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version}",
            "metadata": {}, "items": items}


def respond(request: web.Request, body: dict[str, Any], aggregated_v: str = "") -> web.Response:
    if aggregated_v:
        ct = AGGREGATED_CT if aggregated_v == "v2" else AGGREGATED_CT_BETA
        resp = http.json_response(body)
        resp.headers["Content-Type"] = ct
        return resp
    return http.json_response(body)
