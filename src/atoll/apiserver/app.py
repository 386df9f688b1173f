"""The API server's composition root: store, watch cache, registry, HTTP app, TLS.

``ApiServer.start()`` opens the store, loads the watch cache, makes sure the
built-in namespaces exist and serves HTTPS until ``stop()``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from atoll import __version__
from atoll.api import errors
from atoll.api.resources.serviceaddresses import ServiceRanges
from atoll.apiserver import (authn, authz, bootstrap_policy, builtin_crds, certificates, crds,
                             discovery, heap, http, join, metrics, pki, protocol, proxy, rbac,
                             routing, runtimebootstrap, serviceaccounts, servicebootstrap,
                             storagebootstrap)
from atoll.apiserver.admission import Admission
from atoll.apiserver.consoletickets import TicketRedeemer
from atoll.apiserver.admission.defaultstorageclass import DefaultStorageClass
from atoll.apiserver.admission.escalation import EscalationCheck
from atoll.apiserver.admission.limitranger import LimitRanger
from atoll.apiserver.admission.noderestriction import NodeRestriction
from atoll.apiserver.admission.podvm import PodVMRestrictions
from atoll.apiserver.admission.podsecurity import PodSecurity
from atoll.apiserver.admission.quota import QuotaAdmission
from atoll.apiserver.admission.runtimeclass import (DefaultRuntimeClass,
                                                    RuntimeClassAdmission)
from atoll.apiserver.admission.serviceaccount import ServiceAccountAdmission
from atoll.apiserver.admission.storageclaims import StorageClaims
from atoll.apiserver.admission.storageprotection import StorageObjectInUseProtection
from atoll.apiserver.admission.vmbindings import VMBindings
from atoll.apiserver.admission.webhook_client import WebhookClient
from atoll.apiserver.admission.webhooks import Webhooks
from atoll.apiserver.aggregator import Aggregator
from atoll.apiserver.apiserverendpoints import APIServerEndpoints, advertise_address
from atoll.apiserver.apiservices import FRONT_PROXY_CLIENT, APIServices
from atoll.apiserver.audit import AuditLog
from atoll.apiserver.contentlibrary import ContentLibrary
from atoll.apiserver.crd_cleanup import CRDCleanup
from atoll.apiserver.errors import error_middleware
from atoll.apiserver.handlers import ResourceHandler
from atoll.apiserver.metricsapi import MetricsAPI
from atoll.apiserver.nodeproxy import NodeProxy
from atoll.apiserver.objects import ObjectService, WriteOptions
from atoll.apiserver import openapi_proto
from atoll.apiserver.openapi import OpenAPI
from atoll.apiserver.projects import ProjectsAPI
from atoll.apiserver.registry import Registry
from atoll.apiserver.tokenreview import TokenReviewer
from atoll import webui
from atoll.settings import ServerSettings
from atoll.storage.cacher import Cacher
from atoll.storage.store import Store

log = logging.getLogger("atoll.apiserver")

BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
KUBE_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z",
                "goVersion": "go1.25.0", "compiler": "gc", "platform": "linux/amd64"}


def open_store(settings: ServerSettings) -> Store:
    url = settings.datastore or f"sqlite://{settings.data_dir / 'state.db'}"
    if url.startswith("sqlite://"):
        from atoll.storage.sqlite import SQLiteStore

        return SQLiteStore(Path(url[len("sqlite://"):]), history_keep=settings.history_revisions)
    if url.startswith(("etcd://", "etcds://")):
        from atoll.storage.etcd import EtcdStore

        return EtcdStore(url, history_keep=settings.history_revisions,
                         ssl_context=etcd_tls(settings))
    raise errors.BadRequest(f"unsupported datastore {url!r} (supported: sqlite://PATH, "
                            "etcd://HOST:PORT[,HOST:PORT...], etcds://...)")


def etcd_tls(settings: ServerSettings) -> Any:
    """A TLS context for etcds:// from --etcd-cafile/--etcd-certfile/--etcd-keyfile."""
    if not (settings.etcd_cafile or settings.etcd_certfile):
        return None
    ctx = ssl.create_default_context(cafile=str(settings.etcd_cafile) if settings.etcd_cafile
                                     else None)
    if settings.etcd_certfile:
        ctx.load_cert_chain(str(settings.etcd_certfile),
                            str(settings.etcd_keyfile) if settings.etcd_keyfile else None)
    return ctx


class ApiServer:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.store: Store = open_store(settings)
        self.cacher = Cacher(self.store, window=settings.watch_window_events,
                             window_seconds=settings.watch_window_seconds)
        self.registry = Registry()
        self.svc = ObjectService(self.store, self.cacher, self.registry,
                                 pod_toleration_seconds=settings.pod_toleration_seconds,
                                 service_ranges=ServiceRanges(
                                     ipaddress.IPv4Network(settings.service_cluster_ip_range),
                                     settings.service_node_port_range))
        self.openapi = OpenAPI(self.registry)
        self.openapi.registry_crd = self._crd_by_name
        self.handler = ResourceHandler(self.svc, self.registry)
        self.authorizer = rbac.Authorizer(rbac.RuleResolver(self.cacher))
        self.audit = AuditLog(settings.audit_log or settings.data_dir / "audit.log")
        self.webhook_client = WebhookClient(
            lambda ns, name, port: proxy.resolve_service(self.svc, self.registry, ns, name, port))
        self.svc.admission = Admission([
            LimitRanger(), ServiceAccountAdmission(), PodSecurity(settings.pod_security_default),
            NodeRestriction(), DefaultStorageClass(), StorageObjectInUseProtection(),
            StorageClaims(), DefaultRuntimeClass(settings.default_runtime_class),
            RuntimeClassAdmission(), PodVMRestrictions(), EscalationCheck(self.authorizer),
            certificates.ApprovalCheck(self.authorizer), VMBindings()],
            quota=QuotaAdmission(), webhooks=Webhooks(self.webhook_client, self.registry))
        self.node_proxy: NodeProxy | None = None
        self.aggregator: Aggregator | None = None
        self.trimmer: heap.Trimmer | None = None
        self.metrics = metrics.Metrics()
        self.runner: web.AppRunner | None = None
        self.ready = False
        self._tasks: list[asyncio.Task[None]] = []
        self.kubernetes_endpoints: APIServerEndpoints | None = None
        self.started_at = time.time()

    def _crd_by_name(self, name: str) -> dict[str, Any] | None:
        cached = self.cacher.get(crds.CRD_PREFIX + name)
        return cached.obj if cached else None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        data = self.settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        pki_dir = data / "pki"
        await self.store.start()
        if self.settings.join_token:
            await join.join(self.store, pki_dir, self.settings.join_token)
        ca = pki.ensure_ca(pki_dir)
        # in-cluster clients dial the kubernetes Service's address
        serving = pki.ensure_serving(pki_dir, ca, (*self.settings.extra_sans,
                                                   self.svc.service_ranges.nth(1)))
        self.token_issuer = serviceaccounts.TokenIssuer(
            pki_dir, self.cacher, serviceaccounts.options_from(self.settings))
        if self.settings.join_token:
            await join.publish(self.store, pki_dir, self.settings.join_token)
        agent_client = pki.ensure_client(pki_dir, ca, "apiserver-kubelet-client",
                                         "kube-apiserver-kubelet-client", ())
        self.node_proxy = NodeProxy(self.svc, self.registry,
                                    (str(agent_client.cert), str(agent_client.key)))
        self.handler.subresource_proxy = self.node_proxy
        front_proxy_ca = pki.ensure_ca(pki_dir, "front-proxy-ca")
        front_proxy_client = pki.ensure_client(pki_dir, front_proxy_ca, FRONT_PROXY_CLIENT,
                                               FRONT_PROXY_CLIENT, ())
        self.aggregator = Aggregator(self.svc, self.registry, front_proxy_client)
        apiservices = APIServices(self.svc, self.aggregator)
        await self.cacher.start()
        heap.HeapKeeper(lambda: len(self.cacher.objects)).watch(self.cacher)
        self.trimmer = heap.Trimmer(lambda: self.cacher.watcher_count,
                                    departures=lambda: self.cacher.departures)
        self.trimmer.start()
        crds.CRDWatcher(self.registry, self.cacher).start()
        await self._bootstrap()
        await apiservices.publish_authentication(ca, front_proxy_ca)
        await apiservices.register_local()
        app = self.build_app()
        self.runner = protocol.Runner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(serving.cert, serving.key)
        ctx.load_verify_locations(cafile=str(ca.cert))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        site = web.TCPSite(self.runner, self.settings.bind_address, self.settings.port,
                           ssl_context=ctx, backlog=1024, reuse_address=True)
        await site.start()
        self._tasks.append(asyncio.create_task(CRDCleanup(self.svc, self.registry).run(),
                                               name="crd-cleanup"))
        self._tasks.append(asyncio.create_task(apiservices.run(), name="apiservices"))
        csr_type = self.registry.lookup(certificates.GROUP, "v1", "certificatesigningrequests")
        assert csr_type is not None
        self._tasks.append(asyncio.create_task(
            certificates.ClientSigner(self.svc, csr_type, ca).run(), name="csr-signer"))
        self.kubernetes_endpoints = APIServerEndpoints(
            self.svc, advertise_address(self.settings.bind_address), self.settings.port,
            lambda: servicebootstrap.ensure(self.svc, self.svc.service_ranges,
                                            self.settings.port))
        self._tasks.append(asyncio.create_task(self.kubernetes_endpoints.run(),
                                               name="kubernetes-endpoints"))
        self.ready = True
        log.info("serving on https://%s:%d", self.settings.bind_address, self.settings.port)

    async def stop(self) -> None:
        self.ready = False
        if self.kubernetes_endpoints is not None:
            await self.kubernetes_endpoints.stop()
        if self.node_proxy is not None:
            await self.node_proxy.close()
        await self.webhook_client.close()
        if self.aggregator is not None:
            await self.aggregator.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.trimmer is not None:
            await self.trimmer.stop()
        await self.cacher.close()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.store.close()
        self.audit.close()

    async def _bootstrap(self) -> None:
        ns_type = self.registry.lookup("", "v1", "namespaces")
        assert ns_type is not None
        for name in BUILTIN_NAMESPACES:
            if self.cacher.get(ns_type.key("", name)) is None:
                try:
                    await self.svc.create(ns_type, "", {"metadata": {"name": name}},
                                          WriteOptions(field_manager="atoll-apiserver"))
                except errors.AlreadyExists:
                    pass
        await servicebootstrap.ensure(self.svc, self.svc.service_ranges, self.settings.port)
        await storagebootstrap.ensure(self.svc)
        await runtimebootstrap.ensure(self.svc)
        await builtin_crds.ensure(self.svc, self.registry)
        builtin_crds.Keeper(self.svc, self.registry, self.cacher)
        await bootstrap_policy.ensure(self.svc, self.registry)
        bootstrap_policy.Keeper(self.svc, self.registry, self.cacher)

    # -- HTTP --------------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        tokens = authn.TokenFile(self.settings.token_file)
        issuer = self.token_issuer
        app = web.Application(
            middlewares=[error_middleware, self.metrics.middleware,
                         authn.middleware(tokens, anonymous=self.settings.anonymous,
                                          extra_authenticators=[issuer.authenticate],
                                          ticket_redeemer=TicketRedeemer(self.svc).redeem),
                         self.audit.middleware(), authz.middleware(self.authorizer)],
            client_max_size=http.MAX_BODY_BYTES + 1024)
        app["reviewer"] = authz.Reviewer(self.authorizer)
        app["token_reviewer"] = TokenReviewer(tokens, issuer.authenticate, issuer.audiences)
        app["token_issuer"] = issuer
        if self.node_proxy is not None:
            app["metrics_api"] = MetricsAPI(self.node_proxy)
        app["projects_api"] = ProjectsAPI(self.cacher, self.registry, self.authorizer)
        r = app.router
        r.add_get("/version", self._version)
        r.add_get("/version/", self._version)
        for path in ("/healthz", "/livez", "/readyz"):
            r.add_get(path, self._health)
            r.add_get(path + "/{check:.*}", self._health)
        r.add_get("/metrics", self._metrics)
        r.add_get("/api", self._api)
        r.add_get("/api/", self._api)
        r.add_get("/apis", self._apis)
        r.add_get("/apis/", self._apis)
        r.add_get("/openapi/v3", self._openapi_index)
        r.add_get("/openapi/v3/", self._openapi_index)
        r.add_get("/openapi/v3/{gv:.+}", self._openapi_doc)
        r.add_get("/openapi/v2", self._openapi_v2)
        issuer.routes(r)
        ContentLibrary(self.settings.data_dir / "content" / "blobs",
                       self.settings.content_max_blob_bytes).routes(r)
        r.add_route("*", "/api/{tail:.+}", self._resource)
        r.add_route("*", "/apis/{tail:.+}", self._resource)
        webui.routes(r)
        r.add_get("/", self._root)
        return app

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        if self.aggregator is not None:
            remote = await self.aggregator.maybe_serve(request)
            if remote is not None:
                return remote
        parsed = routing.parse(request.path)
        if parsed is None:
            raise errors.NotFound("the server could not find the requested resource")
        if isinstance(parsed, tuple):
            group, version = parsed
            if request.method != "GET":
                raise errors.MethodNotAllowed("the server does not allow this method on the "
                                              "requested resource")
            if group and not version:
                doc = discovery.group(self.registry, group)
                if doc:
                    return http.json_response(doc)
                raise errors.NotFound("the server could not find the requested resource")
            if group and version and not self.registry.has_group_version(group, version):
                # /apis/<group> is the group document
                if request.path.rstrip("/").count("/") == 2:
                    doc = discovery.group(self.registry, group)
                    if doc:
                        return http.json_response(doc)
                raise errors.NotFound("the server could not find the requested resource")
            if not group and version != "v1":
                raise errors.NotFound("the server could not find the requested resource")
            return http.json_response(discovery.resource_list(self.registry, group, version))
        request["resource_path"] = parsed
        return await self.handler.handle(request, parsed)

    async def _api(self, request: web.Request) -> web.Response:
        v = discovery.aggregated_version(request)
        if v:
            return discovery.respond(request, discovery.aggregated(self.registry, True, v), v)
        return discovery.respond(request, discovery.api_versions(request))

    async def _apis(self, request: web.Request) -> web.Response:
        v = discovery.aggregated_version(request)
        if v:
            doc = discovery.aggregated(self.registry, False, v)
            if self.aggregator is not None:
                doc = self.aggregator.merge_aggregated(doc)
            return discovery.respond(request, doc, v)
        doc = discovery.group_list(self.registry)
        if self.aggregator is not None:
            doc = self.aggregator.merge_group_list(doc)
        return discovery.respond(request, doc)

    async def _version(self, request: web.Request) -> web.Response:
        return http.json_response({**KUBE_VERSION, "atollVersion": __version__})

    async def _health(self, request: web.Request) -> web.Response:
        if not self.ready and request.path.startswith("/readyz"):
            return web.Response(status=500, text="[-]ready failed: starting\nreadyz check failed")
        return web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        text = self.metrics.render(objects=len(self.cacher.objects),
                                   watchers=self.cacher.watcher_count,
                                   revision=self.cacher.revision)
        return web.Response(text=text, content_type="text/plain")

    async def _openapi_index(self, request: web.Request) -> web.Response:
        return http.json_response(self.openapi.index())

    async def _openapi_doc(self, request: web.Request) -> web.Response:
        gv = request.match_info["gv"].strip("/")
        parts = gv.split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            raise errors.NotFound("the server could not find the requested resource")
        if not self.registry.has_group_version(group, version):
            raise errors.NotFound("the server could not find the requested resource")
        headers = {"Cache-Control": "public, immutable"} if "hash" in request.query else None
        return http.raw_json_response(self.openapi.document(group, version), headers=headers)

    async def _openapi_v2(self, request: web.Request) -> web.Response:
        """Swagger 2.0 as JSON, or as gnostic protobuf for clients that ask for it (kubectl
        validating a ``kind: List``); the ETag lets clients revalidate their caches."""
        accept = request.headers.get("Accept", "")
        wants_proto = any(t in accept for t in openapi_proto.ACCEPTED_TYPES)
        if wants_proto:
            body = self.openapi.swagger_v2_protobuf()
            content_type = openapi_proto.MEDIA_TYPE
        elif not accept or any(t in accept for t in ("json", "*/*")):
            body = self.openapi.swagger_v2()
            content_type = "application/json"
        else:
            raise errors.NotAcceptable("/openapi/v2 is offered as application/json and as "
                                       f"{openapi_proto.MEDIA_TYPE}")
        etag = '"' + hashlib.sha512(body).hexdigest()[:32].upper() + '"'
        headers = {"ETag": etag, "Vary": "Accept"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers={**headers, "Content-Type": content_type})

    async def _root(self, request: web.Request) -> web.Response:
        paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3",
                 "/readyz", "/version"]
        for group, versions in self.registry.groups().items():
            if group:
                paths.append(f"/apis/{group}")
                paths.extend(f"/apis/{group}/{v}" for v in versions)
        return http.json_response({"paths": sorted(paths)})
