"""Reading a kubeconfig into what an HTTPS client needs: server URL, TLS context, token."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ClientConfig:
    server: str
    ssl_context: ssl.SSLContext | bool
    token: str = ""
    namespace: str = "default"
    #: the cluster CA (PEM), for servers that verify the API server's client certificate
    ca_pem: bytes = b""


def _named(items: list[dict[str, Any]] | None, name: str, what: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return item.get(what) or {}
    raise ValueError(f"kubeconfig has no {what} named {name!r}")


def _data_or_file(entry: dict[str, Any], key: str, base: Path) -> bytes | None:
    if entry.get(f"{key}-data"):
        return base64.b64decode(entry[f"{key}-data"])
    if entry.get(key):
        path = Path(entry[key])
        if not path.is_absolute():
            path = base / path
        return path.read_bytes()
    return None


def load(path: str | os.PathLike[str], context: str | None = None) -> ClientConfig:
    path = Path(path)
    doc = yaml.safe_load(path.read_text()) or {}
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise ValueError(f"{path}: no current-context")
    ctx = _named(doc.get("contexts"), ctx_name, "context")
    cluster = _named(doc.get("clusters"), ctx.get("cluster", ""), "cluster")
    user = _named(doc.get("users"), ctx.get("user", ""), "user") if ctx.get("user") else {}
    base = path.parent
    ca = b""
    if cluster.get("insecure-skip-tls-verify"):
        sslctx = ssl.create_default_context()
        sslctx.check_hostname = False
        sslctx.verify_mode = ssl.CERT_NONE
    else:
        ca = _data_or_file(cluster, "certificate-authority", base) or b""
        sslctx = ssl.create_default_context(cadata=ca.decode() if ca else None)
    cert = _data_or_file(user, "client-certificate", base)
    key = _data_or_file(user, "client-key", base)
    if cert and key:
        with tempfile.TemporaryDirectory() as tmp:
            cert_path, key_path = Path(tmp) / "c.crt", Path(tmp) / "c.key"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            cert_path.write_bytes(cert)
            sslctx.load_cert_chain(cert_path, key_path)
    token = user.get("token") or ""
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    return ClientConfig(server=cluster["server"].rstrip("/"), ssl_context=sslctx, token=token,
                        namespace=ctx.get("namespace") or "default", ca_pem=ca)
