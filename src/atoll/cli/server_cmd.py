"""`atoll server`: the API server alone (one process, one core)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

from atoll.api import quantity, validation
from atoll.apiserver import pki
from atoll.apiserver.app import ApiServer
from atoll.cli.common import admin_kubeconfig_path, default_data_dir
from atoll.settings import ServerSettings

log = logging.getLogger("atoll.server")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="run the Kubernetes-compatible API server")
    add_server_flags(p)
    p.set_defaults(func=run)


def add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="state directory (default: ~/.atoll)")
    p.add_argument("--port", type=int, default=6443, help="HTTPS port (default: 6443)")
    p.add_argument("--bind-address", default="0.0.0.0", help="address to listen on")
    p.add_argument("--datastore", default="",
                   help="sqlite://PATH (default: DATA_DIR/state.db)")
    p.add_argument("--anonymous-auth", action="store_true",
                   help="serve requests without credentials as system:anonymous")
    p.add_argument("--tls-san", action="append", default=[],
                   help="extra name or address for the serving certificate (repeatable)")
    p.add_argument("--token-auth-file", type=Path, default=None,
                   help="static bearer tokens: token,user,uid,\"group1,group2\" per line")
    p.add_argument("--default-toleration-seconds", type=int, default=3,
                   help="how long pods stay on a not-ready or unreachable node before they "
                        "are evicted, unless they say otherwise (upstream: 300)")
    p.add_argument("--etcd-cafile", type=Path, default=None, help="CA bundle of etcd (etcds://)")
    p.add_argument("--etcd-certfile", type=Path, default=None,
                   help="client certificate for etcd (etcds://)")
    p.add_argument("--etcd-keyfile", type=Path, default=None, help="its key")
    p.add_argument("--join-token", default=os.environ.get("ATOLL_JOIN_TOKEN", ""),
                   metavar="TOKEN",
                   help="servers over one datastore share the cluster CA and signing key "
                        "through it, sealed with this token (at least 16 characters; or "
                        "$ATOLL_JOIN_TOKEN)")
    p.add_argument("--ca-from", type=Path, default=None, metavar="DIR",
                   help="join: take the cluster CA and signing keys from this (first) server's "
                        "data dir, so one kubeconfig works against every server")
    p.add_argument("--pod-security-default", default="baseline",
                   choices=["privileged", "baseline", "restricted"],
                   help="Pod Security level of namespaces without the "
                        "pod-security.kubernetes.io/enforce label (default: baseline)")
    p.add_argument("--default-runtime-class", default="", metavar="CLASS",
                   help="RuntimeClass of pods that name none, in every namespace but the "
                        "kube-* ones unless its atoll.dev/default-runtime-class label says "
                        "otherwise (e.g. atoll-vm: every tenant pod a pod-VM; default: none)")
    p.add_argument("--audit-log-path", type=Path, default=None,
                   help="audit log of every mutating request (default: DATA_DIR/audit.log)")
    p.add_argument("--content-max-blob-size", default="64Gi",
                   help="largest file the content library accepts, a quantity (default: 64Gi)")
    add_token_flags(p)


def add_token_flags(p: argparse.ArgumentParser) -> None:
    """ServiceAccount token flags, named as kube-apiserver's."""
    p.add_argument("--service-account-issuer", action="append", default=[], metavar="URL",
                   help="iss of ServiceAccount tokens (repeatable: the first signs, all are "
                        "accepted; default: https://kubernetes.default.svc.cluster.local)")
    p.add_argument("--api-audiences", default="", metavar="A,B",
                   help="audiences a token must name to be accepted (default: the issuers)")
    p.add_argument("--service-account-max-token-expiration", default="0", metavar="DURATION",
                   help="shorten longer TokenRequests to this, e.g. 24h (default: no cap)")
    p.add_argument("--service-account-extend-token-expiration", default="true",
                   choices=["true", "false"],
                   help="pod tokens asked for 3607s stay valid a year, with a warnafter claim "
                        "(default: true, as upstream)")
    p.add_argument("--service-account-jwks-uri", default="",
                   help="jwks_uri of /.well-known/openid-configuration (default: this server)")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12", metavar="CIDR",
                   help="cluster IPs of Services come from here (default: 10.96.0.0/12)")
    p.add_argument("--service-node-port-range", default="30000-32767", metavar="A-B",
                   help="NodePorts come from here (default: 30000-32767)")


def service_args(settings: ServerSettings) -> list[str]:
    """The Service range flags that give a child `atoll server` these settings."""
    low, high = settings.service_node_port_range
    return ["--service-cluster-ip-range", settings.service_cluster_ip_range,
            "--service-node-port-range", f"{low}-{high}"]


def service_ranges(args: argparse.Namespace) -> dict[str, Any]:
    """--service-cluster-ip-range and --service-node-port-range, checked."""
    try:
        cidr = ipaddress.ip_network(args.service_cluster_ip_range, strict=True)
    except ValueError as e:
        raise ValueError(f"--service-cluster-ip-range: {e}") from None
    if cidr.num_addresses < 16:
        raise ValueError("--service-cluster-ip-range must hold at least 16 addresses")
    parts = args.service_node_port_range.split("-")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError("--service-node-port-range must be two ports, e.g. 30000-32767")
    low, high = int(parts[0]), int(parts[1])
    if not 0 < low <= high < 65536:
        raise ValueError("--service-node-port-range must be within 1-65535, low to high")
    return {"service_cluster_ip_range": str(cidr), "service_node_port_range": (low, high)}


def token_args(settings: ServerSettings) -> list[str]:
    """The token flags that give a child `atoll server` these settings (for `atoll up`)."""
    argv: list[str] = []
    for issuer in settings.service_account_issuers:
        argv += ["--service-account-issuer", issuer]
    if settings.api_audiences:
        argv += ["--api-audiences", ",".join(settings.api_audiences)]
    argv += ["--service-account-max-token-expiration",
             str(settings.service_account_max_token_expiration),
             "--service-account-extend-token-expiration",
             "true" if settings.service_account_extend_token_expiration else "false"]
    if settings.service_account_jwks_uri:
        argv += ["--service-account-jwks-uri", settings.service_account_jwks_uri]
    return argv


def duration_seconds(text: str) -> int:
    """A Go-style duration (90s, 10m, 24h, 1h30m) or plain seconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"((\d+)h)?((\d+)m)?((\d+)s)?", text)
    if not text or parts is None:
        raise ValueError(f"not a duration: {text!r} (say 10m, 24h or 1h30m)")
    h, m, s = (int(parts.group(i) or 0) for i in (2, 4, 6))
    return h * 3600 + m * 60 + s


def settings_from(args: argparse.Namespace) -> ServerSettings:
    data_dir = (args.data_dir or default_data_dir()).resolve()
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, not {args.port}")
    if args.default_runtime_class and validation.is_dns1123_subdomain(args.default_runtime_class):
        raise ValueError(f"--default-runtime-class must name a RuntimeClass, not "
                         f"{args.default_runtime_class!r}")
    return ServerSettings(data_dir=data_dir, port=args.port, bind_address=args.bind_address,
                          datastore=args.datastore, anonymous=args.anonymous_auth,
                          extra_sans=tuple(args.tls_san), token_file=args.token_auth_file,
                          pod_toleration_seconds=args.default_toleration_seconds,
                          content_max_blob_bytes=quantity.integer(args.content_max_blob_size),
                          pod_security_default=args.pod_security_default,
                          default_runtime_class=args.default_runtime_class,
                          audit_log=args.audit_log_path, join_token=args.join_token,
                          etcd_cafile=args.etcd_cafile,
                          etcd_certfile=args.etcd_certfile, etcd_keyfile=args.etcd_keyfile,
                          service_account_issuers=tuple(args.service_account_issuer) or
                          ServerSettings.service_account_issuers,
                          api_audiences=tuple(a.strip() for a in args.api_audiences.split(",")
                                              if a.strip()),
                          service_account_max_token_expiration=duration_seconds(
                              args.service_account_max_token_expiration),
                          service_account_extend_token_expiration=(
                              args.service_account_extend_token_expiration == "true"),
                          service_account_jwks_uri=args.service_account_jwks_uri,
                          **service_ranges(args))


#: the admin user's name, as kubeadm names it
ADMIN_USER = "kubernetes-admin"


def write_admin_kubeconfig(settings: ServerSettings) -> Path:
    """The cluster-admin kubeconfig, written once per data dir: kubeadm's admin identity
    (CN=kubernetes-admin, O=system:masters, the superuser group), in ``pki/admin.crt``."""
    pki_dir = settings.data_dir / "pki"
    ca = pki.ensure_ca(pki_dir)
    admin = pki.ensure_client(pki_dir, ca, "admin", ADMIN_USER, ("system:masters",))
    host = "127.0.0.1" if settings.bind_address in ("0.0.0.0", "::") else settings.bind_address
    text = pki.kubeconfig(server=f"https://{host}:{settings.port}", ca_pem=ca.cert_pem(),
                          user=ADMIN_USER, cert_pem=admin.cert_pem(), key_pem=admin.key_pem())
    path = admin_kubeconfig_path(settings.data_dir)
    if not path.exists() or path.read_text() != text:
        pki.write_file(path, text)
    return path


async def serve(settings: ServerSettings) -> None:
    server = ApiServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    write_admin_kubeconfig(settings)
    try:
        await stop.wait()
    finally:
        await server.stop()


def join_ca(data_dir: Path, source: Path) -> None:
    """Copy the first server's CA and signing keys (never overwriting this server's own)."""
    src, dst = source / "pki", data_dir / "pki"
    if not (src / "ca.crt").exists() or not (src / "ca.key").exists():
        raise FileNotFoundError(f"--ca-from {source}: no pki/ca.crt and pki/ca.key there")
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and (item.name.startswith(("ca.", "sa.", "serviceaccount"))) and \
                not (dst / item.name).exists():
            pki.write_file(dst / item.name, item.read_text())


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if getattr(args, "ca_from", None):
        join_ca(settings.data_dir, args.ca_from)
    try:
        import uvloop  # type: ignore[import-not-found]
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(settings))
    return 0
