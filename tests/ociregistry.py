"""A real OCI registry for tests and benchmarks: Debian's ``docker-registry`` on a loopback
port (optionally with htpasswd auth and TLS from a test CA), images pushed with ``skopeo``
from OCI layouts built here."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
import urllib.request
import ssl
from dataclasses import dataclass, field
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def available() -> bool:
    return all(shutil.which(b) for b in ("docker-registry", "skopeo", "htpasswd"))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layout:
    """An OCI image layout being built: blobs, then named manifests or indexes."""

    root: Path
    refs: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def put(self, data: bytes) -> str:
        d = _digest(data)
        (self.root / "blobs" / "sha256" / d.split(":")[1]).write_bytes(data)
        return d

    def image(self, layers: list[bytes], config: dict, *, arch: str = "amd64",
              compress: bool = True, level: int = 6) -> dict:
        """A manifest for ``layers`` (uncompressed tars); its descriptor."""
        descs = []
        for layer in layers:
            data = gzip.compress(layer, compresslevel=level, mtime=0) if compress else layer
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" +
                          ("+gzip" if compress else ""), "digest": self.put(data),
                          "size": len(data)})
        cfg = json.dumps({"architecture": arch, "os": "linux", "config": config,
                          "rootfs": {"type": "layers",
                                     "diff_ids": [_digest(x) for x in layers]}}).encode()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": self.put(cfg), "size": len(cfg)},
                               "layers": descs}).encode()
        return {"mediaType": OCI_MANIFEST, "digest": self.put(manifest), "size": len(manifest),
                "platform": {"architecture": arch, "os": "linux"}}

    def index(self, entries: list[dict]) -> dict:
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                           "manifests": entries}).encode()
        return {"mediaType": OCI_INDEX, "digest": self.put(data), "size": len(data)}

    def name(self, desc: dict, tag: str) -> None:
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.refs.append(entry)
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2,
                                                          "manifests": self.refs}))


@dataclass
class Registry:
    root: Path
    port: int
    proc: subprocess.Popen
    tls: bool = False
    user: str = ""
    password: str = ""
    ca_file: Path | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def push(self, layout: Path, tag: str, dest: str, *, all_platforms: bool = False) -> None:
        """``skopeo copy oci:layout:tag docker://host/dest``."""
        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        if self.user:
            cmd.append(f"--dest-creds={self.user}:{self.password}")
        if all_platforms:
            cmd.append("--all")
        cmd += [f"oci:{layout}:{tag}", f"docker://{self.host}/{dest}"]
        env = dict(os.environ, HOME=str(self.root))  # skopeo's own auth file stays here
        subprocess.run(cmd, check=True, capture_output=True, timeout=300, env=env)

    def blob_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return (self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] /
                hexd / "data")

    def blob_gets(self, digest: str) -> int:
        """GETs of one blob the registry logged."""
        return sum(1 for line in self.log().splitlines()
                   if f"/blobs/{digest}" in line and '"GET ' in line and "response" not in line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def make_ca(dest: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for ``host``: (ca.crt, server.crt, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    dest.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "atoll test registry CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = dest / "ca.crt", dest / "server.crt", dest / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def start(root: Path, port: int, *, user: str = "", password: str = "",
          tls: bool = False) -> Registry:
    """``docker-registry serve`` on 127.0.0.1:port; returns once ``/v2/`` answers."""
    root.mkdir(parents=True, exist_ok=True)
    config = ["version: 0.1", "log: {level: info, accesslog: {disabled: false}}",
              f"storage: {{filesystem: {{rootdirectory: {root / 'storage'}}}, "
              f"delete: {{enabled: true}}}}"]
    http = f"http: {{addr: 127.0.0.1:{port}"
    ca_file = None
    if tls:
        ca_file, crt, key = make_ca(root / "pki")
        http += f", tls: {{certificate: {crt}, key: {key}}}"
    config.append(http + "}")
    if user:
        htfile = root / "htpasswd"
        out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                             capture_output=True, text=True).stdout
        htfile.write_text(out)
        config.append(f"auth: {{htpasswd: {{realm: atoll-test, path: {htfile}}}}}")
    (root / "config.yml").write_text("\n".join(config) + "\n")
    log = open(root / "registry.log", "ab")
    proc = subprocess.Popen(["docker-registry", "serve", str(root / "config.yml")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    reg = Registry(root, port, proc, tls, user, password, ca_file)
    ctx = ssl.create_default_context(cafile=str(ca_file)) if tls else None
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited:\n{reg.log()}")
        try:
            urllib.request.urlopen(f"{'https' if tls else 'http'}://{reg.host}/v2/",
                                   context=ctx, timeout=2)
            return reg
        except urllib.error.HTTPError:
            return reg  # 401: it answers
        except OSError:
            if time.monotonic() > deadline:
                reg.stop()
                raise RuntimeError(f"docker-registry never answered:\n{reg.log()}")
            time.sleep(0.1)
