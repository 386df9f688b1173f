"""The cluster's certificates: a CA, the server's serving certificate, client certificates.

Created once in the data dir on first start and reused after, so kubeconfigs
stay valid across restarts.  EC P-256 keys: small, and fast TLS handshakes.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atoll._kits.netaddr import default_route_address

CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path

    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    def key_pem(self) -> bytes:
        return self.key.read_bytes()


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ensure_ca(directory: Path, stem: str = "ca") -> CertPair:
    """Create a CA in ``directory`` unless it already exists: the cluster CA (``ca``), or
    another one for a separate trust domain (``front-proxy-ca``, the aggregator's)."""
    pair = CertPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    if pair.cert.exists() and pair.key.exists():
        return pair
    directory.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         f"atoll-{stem}@{int(_now().timestamp())}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(pair.key, _key_pem(key))
    _write_private(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
    return pair


def _load_ca(ca: CertPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.cert_pem())
    key = serialization.load_pem_private_key(ca.key_pem(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def issue(ca: CertPair, *, common_name: str, organizations: tuple[str, ...] = (),
          server_names: tuple[str, ...] = (), client: bool = True, server: bool = False,
          days: int = LEAF_DAYS) -> tuple[bytes, bytes]:
    """Sign a new leaf certificate; returns (cert PEM, key PEM)."""
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    cert = _sign_leaf(ca, key.public_key(), x509.Name(attrs), server_names=server_names,
                      client=client, server=server, lifetime=dt.timedelta(days=days))
    return cert, _key_pem(key)


def sign_client_csr(ca: CertPair, csr_pem: bytes, lifetime: dt.timedelta) -> bytes:
    """A client certificate for the key and subject of a (verified) certificate request."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("the request's signature does not match its public key")
    return _sign_leaf(ca, csr.public_key(), csr.subject, server_names=(), client=True,
                      server=False, lifetime=lifetime)


def client_csr(common_name: str, organizations: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A new key and a certificate request for it: (CSR PEM, key PEM)."""
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)) \
        .sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _sign_leaf(ca: CertPair, public_key: object, subject: x509.Name, *,
               server_names: tuple[str, ...], client: bool, server: bool,
               lifetime: dt.timedelta) -> bytes:
    ca_cert, ca_key = _load_ca(ca)
    usages = []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    not_after = min(_now() + lifetime, ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                     key_cert_sign=False, crl_sign=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if server_names:
        sans: list[x509.GeneralName] = []
        for n in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def host_names() -> tuple[str, ...]:
    """Names and addresses a client on this host or the LAN may use to reach the server."""
    names = ["localhost", "127.0.0.1", "::1", "kubernetes", "kubernetes.default",
             "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
    # the source of the default route: what hosts' agents register and pods are told
    # (KUBERNETES_SERVICE_HOST) when they reach the API on loopback
    address = default_route_address("")
    if address and address not in names:
        names.append(address)
    for n in {socket.gethostname(), socket.getfqdn()}:
        if n and n not in names:
            names.append(n)
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addr = info[4][0]
            if addr not in names:
                names.append(addr)
    except OSError:
        pass
    return tuple(names)


def ensure_serving(directory: Path, ca: CertPair, extra_names: tuple[str, ...] = ()) -> CertPair:
    pair = CertPair(directory / "apiserver.crt", directory / "apiserver.key")
    names = host_names() + extra_names
    if pair.cert.exists() and pair.key.exists() and _covers(pair.cert, names):
        return pair
    cert, key = issue(ca, common_name="atoll-apiserver", server_names=names,
                      client=False, server=True)
    _write_private(pair.key, key)
    _write_private(pair.cert, cert)
    return pair


def _covers(cert_path: Path, names: tuple[str, ...]) -> bool:
    """Whether a serving certificate names all of ``names`` (else it is issued again: the
    host's address changed, or a newer release serves more names)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = {str(a) for a in sans.get_values_for_type(x509.IPAddress)} | set(
        sans.get_values_for_type(x509.DNSName))
    return all(str(ipaddress.ip_address(n)) in have if _is_ip(n) else n in have for n in names)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def ensure_client(directory: Path, ca: CertPair, name: str, user: str,
                  groups: tuple[str, ...]) -> CertPair:
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    if pair.cert.exists() and pair.key.exists() and _subject(pair.cert) == (user, groups):
        return pair
    cert, key = issue(ca, common_name=user, organizations=groups)
    _write_private(pair.key, key)
    _write_private(pair.cert, cert)
    return pair


def _subject(path: Path) -> tuple[str, tuple[str, ...]]:
    """(CN, O values) of a certificate: an identity renamed in a release gets a new one."""
    try:
        subject = x509.load_pem_x509_certificate(path.read_bytes()).subject
    except (OSError, ValueError):
        return "", ()
    cn = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = tuple(str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    return (cn[0] if cn else ""), orgs


def kubeconfig(*, server: str, ca_pem: bytes, user: str, cert_pem: bytes | None = None,
               key_pem: bytes | None = None, token: str | None = None,
               cluster: str = "atoll", namespace: str = "default") -> str:
    """A kubeconfig document with embedded credentials."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    creds: dict[str, str] = {}
    if cert_pem and key_pem:
        creds = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    if token:
        creds["token"] = token
    context = f"{user}@{cluster}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server,
                                                   "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": f"{user}@{cluster}", "user": creds}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": f"{user}@{cluster}",
                                                   "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_file(path: Path, text: str) -> None:
    _write_private(path, text.encode())
