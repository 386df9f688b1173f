"""The client-certificate signer of CertificateSigningRequests, and the approval check.

The Kubernetes way to give someone a client certificate: they (or ``atoll user
add``) post a request with a key they keep, someone allowed to approve for the
signer approves it (``kubectl certificate approve``), and the signer puts the
certificate in ``status.certificate``.  The kind itself (its write rules, printer and
fields) is declared in ``atoll.api.resources.certificates_v1``.

The ``kubernetes.io/kube-apiserver-client`` signer runs inside the API server,
which holds the cluster CA; it follows the watch cache, so every approved
request is signed once, also when the approval came through another server.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from atoll.api import errors
from atoll.api.resources.certificates_v1 import CLIENT_SIGNER, GROUP
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.apiserver import pki
from atoll.apiserver.admission import BasePlugin
from atoll.apiserver.attributes import Attributes
from atoll.storage.cacher import CacheEvent

if TYPE_CHECKING:
    from atoll.apiserver.objects import ObjectService
    from atoll.apiserver.rbac import Authorizer

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = dt.timedelta(days=365)


class ApprovalCheck(BasePlugin):
    """Deciding on a request also needs ``approve`` on the signer, as upstream."""

    def __init__(self, authorizer: "Authorizer") -> None:
        self.authorizer = authorizer

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None:
        if rt.group != GROUP or subresource != "approval" or opts.user_info is None:
            return
        signer = str((old.get("spec") or {}).get("signerName") or "")
        domain = signer.split("/")[0] + "/*"
        for name in (signer, domain):
            a = Attributes(opts.user_info, "approve", True, GROUP, "v1", "signers", "", "", name)
            if self.authorizer.authorize(a).allowed:
                return
        raise errors.Forbidden(f'certificatesigningrequests.certificates.k8s.io '
                               f'"{old["metadata"]["name"]}" is forbidden: user not permitted to '
                               f'approve requests with signerName "{signer}"',
                               name=old["metadata"]["name"], group=GROUP,
                               kind="certificatesigningrequests")


class ClientSigner:
    """Signs approved ``kube-apiserver-client`` requests with the cluster CA."""

    def __init__(self, svc: "ObjectService", rt: ResourceType, ca: pki.CertPair) -> None:
        self.svc = svc
        self.rt = rt
        self.ca = ca
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        svc.cacher.listeners.append(self._on_event)

    def _on_event(self, event: CacheEvent) -> None:
        if event.key.startswith(self.rt.store_prefix) and event.type != "DELETED" and \
                _wants_signing(event.obj):
            self.queue.put_nowait(event.obj["metadata"]["name"])

    async def run(self) -> None:
        for cached in self.svc.cacher.list(self.rt.store_prefix):
            if _wants_signing(cached.obj):
                self.queue.put_nowait(cached.obj["metadata"]["name"])
        while True:
            name = await self.queue.get()
            try:
                await self.sign(name)
            except errors.ApiError as err:
                log.info("signing %s: %s", name, err)
            except Exception:
                log.exception("signing certificate request %s failed", name)

    async def sign(self, name: str) -> None:
        cached = self.svc.cacher.get(self.rt.key("", name))
        if cached is None or not _wants_signing(cached.obj):
            return
        spec = cached.obj.get("spec") or {}
        lifetime = DEFAULT_LIFETIME
        if isinstance(spec.get("expirationSeconds"), int):
            lifetime = min(lifetime, dt.timedelta(seconds=spec["expirationSeconds"]))
        try:
            pem = base64.b64decode(spec["request"])
            cert = await asyncio.to_thread(pki.sign_client_csr, self.ca, pem, lifetime)
            status: dict[str, Any] = {"certificate": base64.b64encode(cert).decode()}
        except ValueError as err:
            status = {"conditions": [{"type": "Failed", "status": "True", "reason": "SigningError",
                                      "message": str(err)}]}

        def put(current: dict[str, Any]) -> dict[str, Any]:
            st = current.setdefault("status", {})
            if "certificate" in status:
                st["certificate"] = status["certificate"]
            else:
                st["conditions"] = list(st.get("conditions") or []) + status["conditions"]
            return current
        await self.svc.guaranteed_update(self.rt, "", name, put,
                                         WriteOptions(field_manager="atoll-signer"),
                                         subresource="status")


def _wants_signing(obj: dict[str, Any]) -> bool:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    types = {c.get("type") for c in status.get("conditions") or [] if isinstance(c, dict)}
    return spec.get("signerName") == CLIENT_SIGNER and "Approved" in types and \
        "Denied" not in types and "Failed" not in types and not status.get("certificate")
