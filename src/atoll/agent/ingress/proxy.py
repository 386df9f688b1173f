"""An HTTP reverse proxy on the host's pod-facing address, ports 80 and 443 (TLS, the
certificate chosen by SNI: ``tls.py``): each request goes to a ready endpoint (chosen at
random) of the backend its Ingress rules name, by pod address, with the ``X-Forwarded-*``
headers upstream controllers add.  ``kube-system/atoll-ingress`` (a LoadBalancer) reaches it
on every host through the Service proxy.  Upgrade requests (websockets) become raw byte
streams to the endpoint (``upgrade.py``).

Answers as ingress-nginx does when there is no route (404) or no ready endpoint (503), and
redirects plain HTTP (308) to HTTPS for hosts that have a certificate of their own."""

from __future__ import annotations

import logging
import random
import socket
from typing import Any

import aiohttp
from aiohttp import web

from atoll.agent.host import sockets
from atoll.agent.ingress import tls, upgrade
from atoll.agent.ingress.routes import Backend, route
from atoll.agent.ingress.secrets import SecretWatches
from atoll.agent.proxy.rules import endpoints_of
from atoll.client.rest import ApiClient

log = logging.getLogger(__name__)
#: hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own, never forwarded
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "host"})
PORTS = [{"name": "http", "port": 80, "protocol": "TCP"},
         {"name": "https", "port": 443, "protocol": "TCP"}]
#: ACME HTTP-01 challenges must stay reachable over plain HTTP
ACME = "/.well-known/acme-challenge/"


class IngressProxy:
    def __init__(self, ingresses: Any, services: Any, slices: Any, address: str,
                 client: ApiClient | None = None, port: int = 80,
                 tls_port: int = 443) -> None:
        self.ingresses, self.services, self.slices = ingresses, services, slices
        self.address, self.port, self.tls_port = address, port, tls_port
        self.client = client
        self.certificates: tls.Certificates | None = None
        self._watches: SecretWatches | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        ingresses.add_handler(lambda *_: self._tls_references())

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        # open websockets would otherwise hold the agent's shutdown for a minute
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        sock = sockets.bound(socket.SOCK_STREAM, self.address, self.port)
        await web.SockSite(self._runner, sock).start()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=60),
            auto_decompress=False)
        log.info("ingress router on %s:%d", self.address, self.port)
        self.certificates = tls.Certificates(self.ingresses)
        if self.client is not None:
            self._watches = SecretWatches(self.client, self.certificates.update)
            self._tls_references()
        try:
            sock = sockets.bound(socket.SOCK_STREAM, self.address, self.tls_port)
        except OSError as e:  # plain HTTP still serves
            log.error("cannot serve Ingresses over TLS on %s:%d: %s", self.address,
                      self.tls_port, e)
            return
        await web.SockSite(self._runner, sock, ssl_context=self.certificates.default).start()
        log.info("ingress router (TLS) on %s:%d", self.address, self.tls_port)

    def _tls_references(self) -> None:
        """Watch the Secrets the Ingresses name now, and only those."""
        if self._watches is not None:
            self._watches.sync(tls.secret_refs(self.ingresses.list()))

    async def stop(self) -> None:
        if self._watches is not None:
            await self._watches.stop()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def endpoint(self, backend: Backend) -> tuple[str, int] | None:
        svc = self.services.get(f"{backend.namespace}/{backend.service}")
        if svc is None:
            return None
        port = next((p for p in (svc.get("spec") or {}).get("ports") or []
                     if isinstance(p, dict) and p.get("protocol", "TCP") == "TCP"
                     and (p.get("port") == backend.port or p.get("name") == backend.port)), None)
        if port is None:
            return None
        slices = self.slices.by_index("service", f"{backend.namespace}/{backend.service}")
        choices = [(e.ip, e.port) for e in endpoints_of(slices, str(port.get("name") or ""),
                                                        "TCP") if e.ready]
        return random.choice(choices) if choices else None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        backend = route(self.ingresses.list(), request.host, request.path)
        if backend is None:
            return web.Response(status=404, text="404 Not Found\n")
        if not request.secure and self.certificates is not None and \
                not request.path.startswith(ACME) and self.certificates.secured(request.host):
            host = request.host.split(":", 1)[0]
            port = "" if self.tls_port == 443 else f":{self.tls_port}"
            raise web.HTTPPermanentRedirect(f"https://{host}{port}{request.raw_path}")
        target = self.endpoint(backend)
        if target is None:
            return web.Response(status=503, text="503 Service Temporarily Unavailable\n")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        headers.update({"Host": request.host, "X-Forwarded-Host": request.host,
                        "X-Forwarded-Proto": "https" if request.secure else "http",
                        "X-Real-IP": peer,
                        "X-Forwarded-For": f"{prior}, {peer}" if prior else peer})
        if upgrade.wants_upgrade(request.headers):
            try:
                return await upgrade.relay(request, target, headers, HOP_BY_HOP)
            except upgrade.BadGateway as e:
                log.info("ingress upgrade %s -> %s:%d: %s", request.host, *target, e)
                return web.Response(status=502, text="502 Bad Gateway\n")
        url = f"http://{target[0]}:{target[1]}{request.rel_url}"
        assert self._session is not None
        try:
            async with self._session.request(request.method, url, headers=headers,
                                             data=request.content if request.can_read_body
                                             else None, allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                    and k.lower() != "content-length"})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, OSError) as e:
            log.info("ingress %s -> %s: %s", request.host, url, e)
            return web.Response(status=502, text="502 Bad Gateway\n")
