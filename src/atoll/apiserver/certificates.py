"""CertificateSigningRequests (certificates.k8s.io/v1) and the client-certificate signer.

The Kubernetes way to give someone a client certificate: they (or ``atoll user
add``) post a request with a key they keep, someone allowed to approve for the
signer approves it (``kubectl certificate approve``), and the signer puts the
certificate in ``status.certificate``.  The server records who asked
(``spec.username``/``groups``) from the request's credentials, never from the body.

The ``kubernetes.io/kube-apiserver-client`` signer runs inside the API server,
which holds the cluster CA; it follows the watch cache, so every approved
request is signed once, also when the approval came through another server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from cryptography import x509

from atoll.api import errors
from atoll.api.kinds import ResourceType
from atoll.apiserver import pki
from atoll.apiserver.admission import BasePlugin
from atoll.apiserver.attributes import Attributes
from atoll.apiserver.strategy import Strategy, register
from atoll.storage.cacher import CacheEvent

if TYPE_CHECKING:
    from atoll.apiserver.objects import ObjectService, WriteOptions
    from atoll.apiserver.rbac import Authorizer

log = logging.getLogger(__name__)

GROUP = "certificates.k8s.io"
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
KNOWN_USAGES = {"signing", "digital signature", "content commitment", "key encipherment",
                "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
                "decipher only", "any", "server auth", "client auth", "code signing",
                "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
                "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}
DECISIONS = ("Approved", "Denied")
DEFAULT_LIFETIME = dt.timedelta(days=365)
MIN_EXPIRATION = 600


def decode_request(value: Any) -> x509.CertificateSigningRequest:
    if not isinstance(value, str):
        raise ValueError("must be a base64-encoded PEM certificate request")
    try:
        pem = base64.b64decode(value, validate=True)
        return x509.load_pem_x509_csr(pem)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"must be a base64-encoded PEM certificate request: {err}") from None


class CSRStrategy(Strategy):
    def prepare_create(self, svc, rt, obj, opts):  # type: ignore[no-untyped-def]
        spec = obj.setdefault("spec", {})
        obj.pop("status", None)
        for f in ("username", "uid", "groups", "extra"):
            spec.pop(f, None)
        user = opts.user_info
        if user is not None:
            spec["username"] = user.name
            if user.uid:
                spec["uid"] = user.uid
            spec["groups"] = list(user.groups)
            if user.extra:
                spec["extra"] = user.extra

    def prepare_update(self, rt, old, new, subresource=""):  # type: ignore[no-untyped-def]
        new["spec"] = old.get("spec")
        old_status = old.get("status") or {}
        status = new.get("status") if isinstance(new.get("status"), dict) else {}
        if subresource == "approval":
            # only the decision conditions change here; the certificate stays the signer's
            kept = [c for c in old_status.get("conditions") or [] if c.get("type") not in DECISIONS]
            decided = [c for c in status.get("conditions") or []
                       if isinstance(c, dict) and c.get("type") in DECISIONS]
            status = dict(old_status, conditions=kept + decided)
            if "certificate" in old_status:
                status["certificate"] = old_status["certificate"]
        elif subresource == "status":
            decided = [c for c in old_status.get("conditions") or [] if c.get("type") in DECISIONS]
            others = [c for c in status.get("conditions") or []
                      if isinstance(c, dict) and c.get("type") not in DECISIONS]
            status = dict(status, conditions=decided + others)
        else:
            status = old_status
        for c in status.get("conditions") or []:
            if isinstance(c, dict):
                c.setdefault("status", "True")
                c.setdefault("lastUpdateTime", _now())
                c.setdefault("lastTransitionTime", c["lastUpdateTime"])
        if not status.get("conditions"):
            status.pop("conditions", None)
        if status:
            new["status"] = status
        else:
            new.pop("status", None)

    def validate(self, rt, obj):  # type: ignore[no-untyped-def]
        spec = obj.get("spec") or {}
        causes: list[errors.Cause] = []
        if not spec.get("request"):
            causes.append(errors.required("spec.request"))
        else:
            try:
                csr = decode_request(spec["request"])
                if not csr.is_signature_valid:
                    raise ValueError("the request's signature does not match its public key")
            except ValueError as err:
                causes.append(errors.invalid_value("spec.request", "<request>", str(err)))
        signer = spec.get("signerName")
        if not signer:
            causes.append(errors.required("spec.signerName"))
        elif not isinstance(signer, str) or "/" not in signer:
            causes.append(errors.invalid_value("spec.signerName", signer,
                                               "must be a fully qualified domain and path of the "
                                               "form 'example.com/signer-name'"))
        usages = spec.get("usages") or []
        for i, u in enumerate(usages if isinstance(usages, list) else []):
            if u not in KNOWN_USAGES:
                causes.append(errors.Cause("FieldValueNotSupported",
                                           f'Unsupported value: "{u}"', f"spec.usages[{i}]"))
        exp = spec.get("expirationSeconds")
        if exp is not None and (not isinstance(exp, int) or exp < MIN_EXPIRATION):
            causes.append(errors.invalid_value("spec.expirationSeconds", exp,
                                               f"may not specify a duration less than "
                                               f"{MIN_EXPIRATION} seconds"))
        if signer == CLIENT_SIGNER and isinstance(usages, list) and "client auth" not in usages:
            causes.append(errors.invalid_value("spec.usages", usages,
                                               f"{CLIENT_SIGNER} signs only 'client auth' "
                                               "certificates"))
        conds = {c.get("type") for c in (obj.get("status") or {}).get("conditions") or []
                 if isinstance(c, dict)}
        if {"Approved", "Denied"} <= conds:
            causes.append(errors.invalid_value("status.conditions", "Approved,Denied",
                                               "Approved and Denied conditions are mutually "
                                               "exclusive"))
        return causes

    def validate_transition(self, rt, old, new):  # type: ignore[no-untyped-def]
        def decisions(o: dict[str, Any]) -> set[str]:
            return {c.get("type") for c in (o.get("status") or {}).get("conditions") or []
                    if c.get("type") in DECISIONS}
        lost = decisions(old) - decisions(new)
        if lost:
            return [errors.forbidden_field("status.conditions",
                                           f"updates may not remove a condition of type "
                                           f"{sorted(lost)[0]}")]
        if (old.get("status") or {}).get("certificate") and \
                (new.get("status") or {}).get("certificate") != old["status"]["certificate"]:
            return [errors.forbidden_field("status.certificate",
                                           "updates may not modify existing certificate content")]
        return []


register(f"{GROUP}/CertificateSigningRequest", CSRStrategy())


class ApprovalCheck(BasePlugin):
    """Deciding on a request also needs ``approve`` on the signer, as upstream."""

    def __init__(self, authorizer: "Authorizer") -> None:
        self.authorizer = authorizer

    def validate_update(self, svc: "ObjectService", rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: "WriteOptions", subresource: str) -> None:
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
        from atoll.apiserver.objects import WriteOptions

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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
