"""``pods/proxy``, ``services/proxy`` and ``nodes/proxy``: HTTP relayed to a pod, a Service's
backend or a host's agent, as kube-apiserver's proxy subresources do.

The object's name segment may carry a scheme and a port (``[https:]NAME[:PORT]``).  A pod is
dialled at its pod IP (the API server reaches pod networks as kube-apiserver does); a Service
at one ready backend of the named port (its Endpoints when it has them, else the ready pods its
selector picks, each pod's named ``targetPort`` resolved); a node at its agent's API with the API
server's client certificate (kubelet's ``nodes/proxy``).  Access is authorized on the
subresource like any other request (``get pods/proxy`` for a GET), before this runs.

The caller's credentials (``Authorization``, impersonation, cookies) never travel on, and
hop-by-hop headers are dropped both ways.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from atoll.api import errors
from atoll.api.kinds import ResourceType
from atoll.apiserver.objects import ObjectService
from atoll.apiserver.registry import Registry
from atoll.apiserver.routing import ResourcePath

#: hop-by-hop headers (RFC 9110 §7.6.1) and the caller's credentials: never forwarded
DROP_REQUEST = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Authorization", "Cookie", "Content-Length",
    "X-Remote-User", "X-Remote-Group"))
_DROP_RESPONSE = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Content-Length", "Content-Encoding"))
_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE  # pods' own certificates are not checked, as upstream


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    scheme: str
    name: str
    port: str


def parse_target(segment: str) -> ProxyTarget:
    """``[scheme:]name[:port]`` as kube-apiserver splits it (``https:web:443``, ``web:http``)."""
    parts = segment.split(":")
    if len(parts) == 1:
        return ProxyTarget("", parts[0], "")
    if len(parts) == 2:
        return ProxyTarget("", parts[0], parts[1])
    if len(parts) == 3 and parts[0] in ("http", "https"):
        return ProxyTarget(parts[0], parts[1], parts[2])
    raise errors.BadRequest(f"invalid proxy target {segment!r}: expected [scheme:]name[:port]")


def _remainder(request: web.Request, path: ResourcePath) -> str | None:
    """The raw path after ``.../proxy`` (query excluded); None when the URL ends at ``proxy``."""
    raw = request.rel_url.raw_path
    marker = f"/{path.name}/proxy"
    at = raw.find(marker)
    if at < 0:  # the name was percent-encoded in the URL
        at = raw.find("/proxy", raw.find(f"/{path.plural}/") + len(path.plural) + 2)
        end = at + len("/proxy")
    else:
        end = at + len(marker)
    rest = raw[end:]
    return rest if rest else None


class ResourceProxy:
    def __init__(self, svc: ObjectService, registry: Registry, session: Any,
                 agent_ssl: ssl.SSLContext, agent_url: Any) -> None:
        self.svc = svc
        self.registry = registry
        self.session = session  # a callable returning the shared aiohttp session
        self.agent_ssl = agent_ssl
        self.agent_url = agent_url  # (node name, object) -> https://host:port of its agent

    async def __call__(self, request: web.Request, rt: ResourceType,
                       path: ResourcePath) -> web.StreamResponse:
        target = parse_target(path.name)
        rest = _remainder(request, path)
        if rest is None:  # upstream redirects .../proxy to .../proxy/ so relative links work
            return web.Response(status=301, headers={"Location": str(request.rel_url.with_path(
                request.rel_url.path + "/"))})
        if rt.kind == "Pod":
            base, ctx = self._pod(path.namespace, target)
        elif rt.kind == "Service":
            base, ctx = self._service(path.namespace, target)
        elif rt.kind == "Node":
            base, ctx = self._node(target)
        else:
            raise errors.NotFound(f"the proxy subresource of {rt.plural} is not served")
        url = base + rest + (f"?{request.rel_url.raw_query_string}"
                             if request.rel_url.raw_query_string else "")
        return await self._relay(request, url, ctx)

    # -- targets ---------------------------------------------------------------------------
    def _lookup(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        rt = self.registry.lookup("", "v1", plural)
        assert rt is not None
        return self.svc.get(rt, namespace, name).obj

    def _pod(self, namespace: str, target: ProxyTarget) -> tuple[str, ssl.SSLContext | None]:
        pod = self._lookup("pods", namespace, target.name)
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise errors.ServiceUnavailable(f'pod "{target.name}" has no IP address yet')
        port = target.port
        if port and not port.isdigit():  # a named container port
            port = _named_port(pod, port)
            if port is None:
                raise errors.ServiceUnavailable(f'pod "{target.name}" has no port named '
                                                f'"{target.port}"')
        return _url(target.scheme or "http", ip, port), _ctx(target.scheme)

    def _service(self, namespace: str, target: ProxyTarget) -> tuple[str, ssl.SSLContext | None]:
        ip, backend_port = resolve_service(self.svc, self.registry, namespace, target.name,
                                           target.port)
        return _url(target.scheme or "http", ip, str(backend_port)), _ctx(target.scheme)

    def _node(self, target: ProxyTarget) -> tuple[str, ssl.SSLContext | None]:
        node = self._lookup("nodes", "", target.name)
        base = self.agent_url(target.name, node)
        if target.port:  # another port on the host: plain, as kube-apiserver's node proxy
            host = base.split("://", 1)[1].rsplit(":", 1)[0]
            return _url(target.scheme or "http", host.strip("[]"), target.port), \
                _ctx(target.scheme)
        return base, self.agent_ssl

    # -- the relay -------------------------------------------------------------------------
    async def _relay(self, request: web.Request, url: str,
                     ctx: ssl.SSLContext | None) -> web.StreamResponse:
        if request.headers.get("Upgrade"):
            raise errors.BadRequest("upgrade requests are not proxied through this subresource")
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in DROP_REQUEST
                              and not k.lower().startswith("impersonate-"))
        headers["X-Forwarded-For"] = request.remote or ""
        return await forward(self.session(), request, url, headers, ssl=ctx if ctx else False,
                             read_timeout=300, unreachable="error trying to reach the backend")


async def forward(session: aiohttp.ClientSession, request: web.Request, url: str,
                  headers: CIMultiDict[str], *, ssl: Any, read_timeout: float | None,
                  unreachable: str, server_hostname: str | None = None) -> web.StreamResponse:
    """``request`` sent on to ``url`` with ``headers`` (the caller chose them), and the answer
    streamed back as it came: status, end-to-end headers, body bytes undecoded.  The proxy
    subresources and the aggregator relay so."""
    body = request.content if request.can_read_body else None
    try:
        upstream = await session.request(
            request.method, url, headers=headers, data=body, ssl=ssl,
            server_hostname=server_hostname, allow_redirects=False, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=read_timeout))
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise errors.ServiceUnavailable(f"{unreachable}: {e}") from None
    async with upstream:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() not in _DROP_RESPONSE:
                resp.headers.add(k, v)
        if "Content-Encoding" in upstream.headers:
            resp.headers["Content-Encoding"] = upstream.headers["Content-Encoding"]
        await resp.prepare(request)
        async for chunk in upstream.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


def resolve_service(svc: ObjectService, registry: Registry, namespace: str, name: str,
                    port_key: str) -> tuple[str, int]:
    """One ready backend ``(ip, port)`` of a Service's port, named or numbered (``""``: the
    unnamed one): its Endpoints when it has them, else the ready pods its selector picks.
    The proxy subresources, admission webhooks and the aggregator all dial Services so."""
    rt = registry.lookup("", "v1", "services")
    assert rt is not None
    spec = svc.get(rt, namespace, name).obj.get("spec") or {}
    port = next((p for p in spec.get("ports") or []
                 if port_key in (p.get("name") or "", str(p.get("port")))), None)
    if port is None:
        raise errors.ServiceUnavailable(f'no service port "{port_key}" found for '
                                        f'service "{name}"' if port_key else
                                        f'no unnamed service port found for service '
                                        f'"{name}"')
    backends = _endpoints(svc, registry, namespace, name, port) \
        or _selected_pods(svc, registry, namespace, spec, port)
    if not backends:
        raise errors.ServiceUnavailable(f'no endpoints available for service "{name}"')
    return random.choice(backends)


def _endpoints(svc: ObjectService, registry: Registry, namespace: str, name: str,
               port: dict[str, Any]) -> list[tuple[str, int]]:
    """Ready addresses of the Service's Endpoints for this port (selector-less Services
    are backed by hand-written Endpoints)."""
    rt = registry.lookup("", "v1", "endpoints")
    cached = svc.read(rt, namespace, name) if rt is not None else None
    out = []
    for subset in (cached.obj.get("subsets") or []) if cached is not None else []:
        ports = [p.get("port") for p in subset.get("ports") or []
                 if (p.get("name") or "") == (port.get("name") or "")]
        for address in subset.get("addresses") or []:
            if address.get("ip") and ports and isinstance(ports[0], int):
                out.append((address["ip"], ports[0]))
    return out


def _selected_pods(svc: ObjectService, registry: Registry, namespace: str,
                   spec: dict[str, Any], port: dict[str, Any]) -> list[tuple[str, int]]:
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not selector:
        return []
    rt = registry.lookup("", "v1", "pods")
    assert rt is not None
    target_port = port.get("targetPort", port.get("port"))
    out = []
    for cached in svc.read_list(rt, namespace):
        pod = cached.obj
        status = pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        if not ready or not status.get("podIP") or pod["metadata"].get("deletionTimestamp") \
                or not _selects(selector, pod):
            continue
        number = target_port if isinstance(target_port, int) else \
            _named_port(pod, str(target_port))
        if number is not None:
            out.append((status["podIP"], int(number)))
    return out


def _selects(selector: dict[str, Any], pod: dict[str, Any]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _named_port(pod: dict[str, Any], name: str) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == name and isinstance(p.get("containerPort"), int):
                return int(p["containerPort"])
    return None


def _url(scheme: str, host: str, port: str) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def _ctx(scheme: str) -> ssl.SSLContext | None:
    return _INSECURE if scheme == "https" else None
