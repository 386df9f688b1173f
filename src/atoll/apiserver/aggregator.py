"""The aggregation layer: group-versions served by extension API servers behind Services.

A request under ``/apis/<group>/<version>`` whose APIService names a Service is relayed to one
ready backend of it, after this server authenticated *and* authorized it (the aggregator's own
handler chain does both upstream; the backend authorizes again, with SubjectAccessReviews).
The caller's identity travels as request headers (``X-Remote-User``, ``X-Remote-Group``,
``X-Remote-Extra-<key>``), which the backend trusts because the connection carries the
front-proxy client certificate, signed by a CA of its own (``pki/front-proxy-ca.crt``,
published in ``kube-system/extension-apiserver-authentication``).  The caller's own
credentials never travel on.

Discovery merges the extension groups in: ``/apis`` lists every APIService's group,
``/apis/<group>`` of a remote group is answered here, and aggregated discovery carries the
resources each backend reported at its last availability check (``apiservices``).
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from atoll.api import errors
from atoll.api.resources.apiregistration_v1 import APISERVICES, ca_bundle
from atoll.apiserver import http, proxy
from atoll.apiserver.authn import UserInfo
from atoll.apiserver.pki import CertPair

#: besides proxy.DROP_REQUEST: identity headers a caller sent itself are never passed on
IDENTITY_PREFIXES = ("x-remote-", "impersonate-")
UNAVAILABLE = "the server is currently unable to handle the request"


def is_available(apiservice: dict[str, Any]) -> bool:
    for c in (apiservice.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Available":
            return c.get("status") == "True"
    return False


def identity_headers(user: UserInfo) -> list[tuple[str, str]]:
    """upstream's request-header authentication: one group per header, extra keys escaped."""
    out = [("X-Remote-User", user.name)]
    out += [("X-Remote-Group", g) for g in user.groups]
    for key, values in (user.extra or {}).items():
        for v in values:
            out.append((f"X-Remote-Extra-{quote(key, safe='')}", v))
    return out


class Aggregator:
    def __init__(self, svc: Any, registry: Any, client_cert: CertPair) -> None:
        self.svc = svc
        self.registry = registry
        self.client_cert = client_cert
        #: "<group>/<version>" -> the APIResourceList its backend answered last
        self.resources: dict[str, dict[str, Any]] = {}
        self._contexts: dict[tuple[bytes, bool], ssl.SSLContext] = {}
        self._session: aiohttp.ClientSession | None = None

    # -- what is remote --------------------------------------------------------------------
    def apiservice(self, group: str, version: str) -> dict[str, Any] | None:
        """The Service-backed APIService of a group-version, from the watch cache."""
        cached = self.svc.cacher.get(APISERVICES.key("", f"{version}.{group}"))
        if cached is None or not isinstance((cached.obj.get("spec") or {}).get("service"), dict):
            return None
        return cached.obj

    def remote(self) -> list[dict[str, Any]]:
        """Every Service-backed APIService, highest group then version priority first."""
        out = [c.obj for c in self.svc.cacher.list(APISERVICES.prefix(""))
               if isinstance((c.obj.get("spec") or {}).get("service"), dict)]
        out.sort(key=lambda o: (-int(o["spec"].get("groupPriorityMinimum") or 0),
                                -int(o["spec"].get("versionPriority") or 0),
                                o["metadata"]["name"]))
        return out

    # -- TLS and the session ---------------------------------------------------------------
    def ssl_context(self, spec: dict[str, Any]) -> ssl.SSLContext:
        """Verify the backend with its caBundle (or system roots, or not at all when the
        APIService says insecureSkipTLSVerify), and present the front-proxy certificate."""
        bundle, insecure = ca_bundle(spec), spec.get("insecureSkipTLSVerify") is True
        ctx = self._contexts.get((bundle, insecure))
        if ctx is None:
            ctx = ssl.create_default_context()
            if bundle:
                try:
                    ctx = ssl.create_default_context(cadata=bundle.decode("ascii", "replace"))
                except ssl.SSLError:
                    ctx = ssl.create_default_context()
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            ctx.load_cert_chain(str(self.client_cert.cert), str(self.client_cert.key))
            if len(self._contexts) > 64:
                self._contexts.clear()
            self._contexts[(bundle, insecure)] = ctx
        return ctx

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def backend(self, apiservice: dict[str, Any]) -> tuple[str, ssl.SSLContext, str]:
        """(base URL, TLS context, the name the certificate must carry) of one ready backend;
        NotFound / ServiceUnavailable when the Service or its endpoints are missing."""
        spec = apiservice["spec"]
        ref = spec["service"]
        ns, name = str(ref.get("namespace") or ""), str(ref.get("name") or "")
        ip, port = proxy.resolve_service(self.svc, self.registry, ns, name,
                                         str(ref.get("port") or 443))
        host = f"[{ip}]" if ":" in ip else ip
        return f"https://{host}:{port}", self.ssl_context(spec), f"{name}.{ns}.svc"

    # -- serving ---------------------------------------------------------------------------
    async def maybe_serve(self, request: web.Request) -> web.StreamResponse | None:
        """The response for a path an extension API server owns, or None for local ones."""
        parts = request.path.strip("/").split("/")
        if len(parts) < 2 or parts[0] != "apis":
            return None
        group = parts[1]
        if len(parts) == 2:
            if self.registry.groups().get(group):
                return None
            doc = self.group(group)
            if doc is None:
                return None
            if request.method != "GET":
                raise errors.MethodNotAllowed("the server does not allow this method on the "
                                              "requested resource")
            return http.json_response(doc)
        apiservice = self.apiservice(group, parts[2])
        if apiservice is None:
            return None
        if not is_available(apiservice):
            raise errors.ServiceUnavailable(UNAVAILABLE)
        return await self._relay(request, apiservice)

    async def _relay(self, request: web.Request, apiservice: dict[str, Any]) -> web.StreamResponse:
        if request.headers.get("Upgrade"):
            raise errors.BadRequest("upgrade requests are not proxied to extension API servers")
        try:
            base, ctx, server_name = self.backend(apiservice)
        except (errors.NotFound, errors.ServiceUnavailable):
            raise errors.ServiceUnavailable(UNAVAILABLE) from None
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in proxy.DROP_REQUEST
                              and not k.lower().startswith(IDENTITY_PREFIXES))
        for k, v in identity_headers(request["user"]):
            headers.add(k, v)
        headers["X-Forwarded-For"] = request.remote or ""
        return await proxy.forward(self.session(), request, base + request.rel_url.raw_path_qs,
                                   headers, ssl=ctx, server_hostname=server_name,
                                   read_timeout=None, unreachable="error trying to reach service")

    # -- discovery -------------------------------------------------------------------------
    def _remote_groups(self) -> dict[str, list[dict[str, Any]]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for a in self.remote():
            groups.setdefault(str(a["spec"].get("group") or ""), []).append(a)
        return groups

    def group(self, name: str) -> dict[str, Any] | None:
        services = self._remote_groups().get(name)
        if not services:
            return None
        vs = [{"groupVersion": f"{name}/{a['spec']['version']}", "version": a["spec"]["version"]}
              for a in services]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": vs,
                "preferredVersion": vs[0]}

    def merge_group_list(self, body: dict[str, Any]) -> dict[str, Any]:
        """/apis (legacy): each remote group-version added to its group, or a new group."""
        groups = {g["name"]: g for g in body["groups"]}
        for name, services in self._remote_groups().items():
            doc = groups.get(name)
            if doc is None:
                doc = self.group(name)
                assert doc is not None
                doc = {k: doc[k] for k in ("name", "versions", "preferredVersion")}
                body["groups"].append(doc)
                groups[name] = doc
                continue
            for a in services:
                gv = f"{name}/{a['spec']['version']}"
                if all(v["groupVersion"] != gv for v in doc["versions"]):
                    doc["versions"].append({"groupVersion": gv, "version": a["spec"]["version"]})
        return body

    def merge_aggregated(self, body: dict[str, Any]) -> dict[str, Any]:
        """/apis (aggregated v2): remote versions carry the resources their backend reported;
        one not available (or never reached) is ``Stale``."""
        items = {i["metadata"]["name"]: i for i in body["items"]}
        for name, services in self._remote_groups().items():
            item = items.get(name)
            if item is None:
                item = {"metadata": {"name": name}, "versions": []}
                body["items"].append(item)
                items[name] = item
            for a in services:
                version = a["spec"]["version"]
                listed = self.resources.get(f"{name}/{version}")
                entry: dict[str, Any] = {"version": version, "resources": [],
                                         "freshness": "Current"}
                if listed is not None and is_available(a):
                    entry["resources"] = aggregated_resources(listed, name, version)
                else:
                    entry["freshness"] = "Stale"
                item["versions"] = [v for v in item["versions"] if v["version"] != version]
                item["versions"].append(entry)
        return body


def aggregated_resources(listed: dict[str, Any], group: str, version: str) -> list[dict[str, Any]]:
    """A legacy APIResourceList as aggregated discovery's resources (subresources nested)."""
    out: dict[str, dict[str, Any]] = {}
    subs: list[dict[str, Any]] = []
    for r in listed.get("resources") or []:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            continue
        if "/" in r["name"]:
            subs.append(r)
            continue
        entry: dict[str, Any] = {
            "resource": r["name"],
            "responseKind": {"group": r.get("group", group), "version": r.get("version", version),
                             "kind": r.get("kind", "")},
            "scope": "Namespaced" if r.get("namespaced") else "Cluster",
            "singularResource": r.get("singularName") or "",
            "verbs": list(r.get("verbs") or [])}
        for key in ("shortNames", "categories"):
            if r.get(key):
                entry[key] = list(r[key])
        out[r["name"]] = entry
    for r in subs:
        parent, _, sub = r["name"].partition("/")
        if parent in out:
            out[parent].setdefault("subresources", []).append({
                "subresource": sub,
                "responseKind": {"group": r.get("group", group),
                                 "version": r.get("version", version),
                                 "kind": r.get("kind", "")},
                "verbs": list(r.get("verbs") or [])})
    return list(out.values())
