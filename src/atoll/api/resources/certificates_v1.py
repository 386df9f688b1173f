"""certificates.k8s.io/v1 CertificateSigningRequests: resource type, write rules, printer,
selectable fields.

The server records who asked (``spec.username``/``groups``) from the request's
credentials, never from the body; the decisions and the certificate each have their
own subresource.  The signer and the approval check are ``atoll.apiserver.certificates``'.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography import x509

from atoll.api import errors
from atoll.api.printing import (Cells, _age, _age_col, _dict, _get, _name, _name_col, _str,
                                column, printer)
from atoll.api.resources.base import Kind, field_str
from atoll.api.resourcetype import STATUS, Subresource, builtin
from atoll.api.strategy import Strategy
from atoll.api.timestamps import rfc3339

GROUP = "certificates.k8s.io"

CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"

KNOWN_USAGES = {"signing", "digital signature", "content commitment", "key encipherment",
                "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
                "decipher only", "any", "server auth", "client auth", "code signing",
                "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
                "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}

DECISIONS = ("Approved", "Denied")

MIN_EXPIRATION = 600


CERTIFICATESIGNINGREQUESTS = builtin(GROUP, "v1", "CertificateSigningRequest",
                                     "certificatesigningrequests", False, short_names=("csr",),
                                     generation=False,
                                     subresources=(STATUS, Subresource("approval", verbs=(
                                         "get", "patch", "update"))))


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
                c.setdefault("lastUpdateTime", rfc3339())
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


@printer(columns=[
    _name_col(), _age_col(), column("SignerName", description="Name of the signer."),
    column("Requestor", description="Who made the request."),
    column("RequestedDuration", description="The certificate's requested lifetime."),
    column("Condition", description="Approved, Denied, Failed and Issued.")])
def _csr(obj: dict[str, Any], now: float) -> Cells:
    """As upstream: the decisions, then Issued once the signer filled in the certificate."""
    spec, status = _dict(obj.get("spec")), _dict(obj.get("status"))
    seconds = spec.get("expirationSeconds")
    duration = _short_duration(seconds) if isinstance(seconds, int) else "<none>"
    conds = [str(c.get("type")) for c in status.get("conditions") or [] if isinstance(c, dict)]
    if status.get("certificate"):
        conds.append("Issued")
    return [_name(obj), _age(obj, now), _str(spec.get("signerName")), _str(spec.get("username")),
            duration, ",".join(conds) or "Pending"]


def _short_duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


CERTIFICATESIGNINGREQUEST = Kind(
    CERTIFICATESIGNINGREQUESTS, CSRStrategy(), _csr,
    lambda o: {"spec.signerName": field_str(_get(o, "spec", "signerName"))})
