"""Which certificate the router shows on 443, chosen by SNI as upstream's Ingress defines it.

``spec.tls[].hosts`` of the Ingresses of class ``atoll`` name, per host, a ``kubernetes.io/tls``
Secret (``tls.crt``, ``tls.key``) in the Ingress's namespace.  A server name matching a tls host
exactly wins over one matching a ``*.`` wildcard (which covers one label, as ``routes.py``
matches rule hosts); among equals the first Ingress by namespace/name, then the first entry.
Without SNI, without a match, or when the Secret is missing or bad, the router shows a
self-signed certificate made at start, as ingress-nginx shows its "Kubernetes Ingress
Controller Fake Certificate".  Secrets are hostile input: one that does not load is logged
once per resourceVersion and skipped, never fatal."""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import os
import ssl
from typing import Any, Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from atoll.agent.ingress.routes import host_matches
from atoll.api.resources.networking_v1 import ingress_is_atolls

log = logging.getLogger(__name__)
Obj = dict[str, Any]
SecretRef = tuple[str, str]  # (namespace, name)
FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"
#: a Secret's certificate and key together: far more than any real chain, far less than memory
MAX_PEM = 256 * 1024


def _normal(host: str) -> str:
    return host.lower().rstrip(".")


def tls_entries(ingresses: Iterable[Obj]) -> list[tuple[str, SecretRef]]:
    """(tls host, secret) of every Atoll Ingress, in upstream's order of precedence."""
    out: list[tuple[str, SecretRef]] = []
    for ing in sorted(ingresses, key=lambda i: (i["metadata"].get("namespace", ""),
                                                 i["metadata"].get("name", ""))):
        if not ingress_is_atolls(ing):
            continue
        ns = ing["metadata"].get("namespace", "")
        for entry in (ing.get("spec") or {}).get("tls") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("secretName"), str) \
                    or not entry["secretName"]:
                continue
            for host in entry.get("hosts") or []:
                if isinstance(host, str) and host:
                    out.append((_normal(host), (ns, entry["secretName"])))
    return out


def secret_refs(ingresses: Iterable[Obj]) -> set[SecretRef]:
    """Every Secret the Atoll Ingresses name for TLS (the ones the router needs)."""
    refs: set[SecretRef] = set()
    for ing in ingresses:
        if not ingress_is_atolls(ing):
            continue
        ns = ing["metadata"].get("namespace", "")
        for entry in (ing.get("spec") or {}).get("tls") or []:
            if isinstance(entry, dict) and isinstance(entry.get("secretName"), str) \
                    and entry["secretName"]:
                refs.add((ns, entry["secretName"]))
    return refs


def select(entries: list[tuple[str, SecretRef]], server_name: str,
           usable: Callable[[SecretRef], bool] = lambda ref: True) -> SecretRef | None:
    """The Secret for ``server_name``: an exact tls host first, then a wildcard; entries whose
    Secret is not ``usable`` are passed over, as if they were not there."""
    name = _normal(server_name)
    if not name:
        return None
    for exact in (True, False):
        for host, ref in entries:
            if (host == name if exact else host.startswith("*.") and host_matches(host, name)) \
                    and usable(ref):
                return ref
    return None


def fake_certificate() -> tuple[bytes, bytes]:
    """A fresh self-signed certificate and key (PEM), as ingress-nginx's default one."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, FAKE_CN)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context for one certificate; raises ``ValueError`` when they do not load.

    ``load_cert_chain`` reads only files: the PEM goes through an anonymous memory file
    (``memfd``), so no key ever touches a disk."""
    if len(cert_pem) + len(key_pem) > MAX_PEM:
        raise ValueError("certificate and key are too large")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])  # the router speaks HTTP/1.1 only
    fd = os.memfd_create("ingress-tls", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert_pem + b"\n" + key_pem)
        path = f"/proc/self/fd/{fd}"
        ctx.load_cert_chain(path, path)
    except (ssl.SSLError, OSError) as e:
        raise ValueError(f"certificate or key does not load: {e}") from e
    finally:
        os.close(fd)
    return ctx


def secret_context(secret: Obj) -> ssl.SSLContext:
    """The server context of a ``kubernetes.io/tls`` Secret; ``ValueError`` if it is bad."""
    data = secret.get("data") or {}
    if not isinstance(data, dict):
        raise ValueError("data is not a map")
    try:
        cert, key = (base64.b64decode(str(data.get(k) or ""), validate=True)
                     for k in ("tls.crt", "tls.key"))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"tls.crt or tls.key is not base64: {e}") from e
    if not cert or not key:
        raise ValueError("tls.crt and tls.key are both required")
    return server_context(cert, key)


class Certificates:
    """The router's certificates: a context per Secret, kept while its resourceVersion stays,
    and the SNI callback that hands each handshake the context its server name selects."""

    def __init__(self, ingresses: Any) -> None:
        self.ingresses = ingresses
        self.default = server_context(*fake_certificate())
        self.default.sni_callback = self._sni
        #: by Secret: (resourceVersion, its context, or None when it does not load)
        self._contexts: dict[SecretRef, tuple[str, ssl.SSLContext | None]] = {}

    def update(self, ref: SecretRef, secret: Obj | None) -> None:
        """The Secret as it is now (``None``: gone or not readable)."""
        if secret is None:
            self._contexts.pop(ref, None)
            return
        rv = str((secret.get("metadata") or {}).get("resourceVersion") or "")
        cached = self._contexts.get(ref)
        if cached is not None and rv and cached[0] == rv:
            return
        try:
            ctx: ssl.SSLContext | None = secret_context(secret)
        except ValueError as e:
            log.warning("ingress TLS secret %s/%s skipped: %s", *ref, e)
            ctx = None
        self._contexts[ref] = (rv, ctx)

    def usable(self, ref: SecretRef) -> bool:
        cached = self._contexts.get(ref)
        return cached is not None and cached[1] is not None

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        ref = select(tls_entries(self.ingresses.list()), server_name or "", self.usable)
        found = self._contexts.get(ref) if ref is not None else None
        return (found[1] if found else None) or self.default

    def secured(self, host: str) -> bool:
        """Whether ``host`` has a certificate of its own: plain HTTP to it is redirected."""
        host = host.split(":", 1)[0]
        return select(tls_entries(self.ingresses.list()), host, self.usable) is not None

    def _sni(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        try:
            chosen = self.context_for(server_name)
            if chosen is not self.default:
                sslobj.context = chosen
        except Exception:  # a handshake must never take the router down
            log.exception("choosing a certificate for %r failed", server_name)
