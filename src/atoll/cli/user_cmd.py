"""`atoll user add NAME [--group G]...`: a client certificate and a kubeconfig for a person.

Through the API (``--kubeconfig``, the default): a key is made here and never
leaves this machine; a CertificateSigningRequest for ``CN=NAME, O=GROUP...`` is
posted, approved (which needs ``approve`` on the client signer: cluster
admins), and the certificate the server signs is written into a kubeconfig.
With ``--data-dir`` on the server's own machine, the cluster CA signs directly.

What the user may do is decided by RBAC bindings, e.g. ``atoll namespace create
... --edit NAME``; a fresh user can sign in and discover the API, nothing more.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import sys
from pathlib import Path

from atoll.apiserver import pki
from atoll.cli.common import admin_kubeconfig_path, resolve_kubeconfig
from atoll.client import kubeconfig
from atoll.client.rest import ApiClient

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
SIGNER = "kubernetes.io/kube-apiserver-client"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="people: client certificates and kubeconfigs")
    usub = p.add_subparsers(dest="user_command", metavar="COMMAND", required=True)
    a = usub.add_parser("add", help="issue a client certificate for a user and print a kubeconfig")
    a.add_argument("name", help="user name (the certificate's CN)")
    a.add_argument("--group", action="append", default=[], metavar="G",
                   help="a group the user belongs to (repeatable; the certificate's O)")
    a.add_argument("-o", "--output", default="", help="write the kubeconfig here (mode 600)")
    a.add_argument("--kubeconfig", default=None,
                   help="an administrator's kubeconfig: the request goes through the API")
    a.add_argument("--data-dir", default=None,
                   help="sign with the CA in this server data dir instead of through the API")
    a.add_argument("--duration", default="8760h",
                   help="how long the certificate is valid, e.g. 720h (default: one year)")
    a.add_argument("-n", "--namespace", default="default",
                   help="the namespace the kubeconfig's context starts in")
    a.set_defaults(func=add)


def _duration(text: str) -> dt.timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if not text or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"--duration must look like 720h, 30d or 3600s, not {text!r}")
    seconds = int(text[:-1]) * units[text[-1]]
    if seconds < 600:
        raise ValueError("--duration must be at least 10 minutes (600s)")
    return dt.timedelta(seconds=seconds)


def _check_name(name: str, groups: list[str]) -> None:
    if not name.strip() or name != name.strip() or len(name) > 253:
        raise ValueError("the user name must be non-empty, without surrounding spaces, "
                         "at most 253 characters")
    if name.startswith("system:") or any(g.startswith("system:") for g in groups):
        raise ValueError("names and groups starting with 'system:' are reserved for the "
                         "platform's own identities")


def add(args: argparse.Namespace) -> int:
    _check_name(args.name, args.group)
    lifetime = _duration(args.duration)
    groups = tuple(dict.fromkeys(args.group))
    if args.data_dir:
        text = _sign_locally(Path(args.data_dir), args.name, groups, lifetime, args.namespace)
    else:
        text = asyncio.run(_sign_through_api(resolve_kubeconfig(args.kubeconfig), args.name,
                                             groups, lifetime, args.namespace))
    if args.output:
        pki.write_file(Path(args.output), text)
        print(f"wrote a kubeconfig for {args.name} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _sign_locally(data_dir: Path, name: str, groups: tuple[str, ...], lifetime: dt.timedelta,
                  namespace: str) -> str:
    pki_dir = data_dir / "pki"
    if not (pki_dir / "ca.key").exists():
        raise FileNotFoundError(f"{pki_dir}/ca.key not found: is {data_dir} a server data dir?")
    ca = pki.CertPair(pki_dir / "ca.crt", pki_dir / "ca.key")
    server = kubeconfig.load(admin_kubeconfig_path(data_dir)).server
    csr, key = pki.client_csr(name, groups)
    cert = pki.sign_client_csr(ca, csr, lifetime)
    return pki.kubeconfig(server=server, ca_pem=ca.cert_pem(), user=name, cert_pem=cert,
                          key_pem=key, namespace=namespace)


async def _sign_through_api(path: Path, name: str, groups: tuple[str, ...],
                            lifetime: dt.timedelta, namespace: str) -> str:
    config = kubeconfig.load(path)
    csr, key = pki.client_csr(name, groups)
    client = ApiClient(config, user_agent="atoll-user")
    try:
        created = await client.create(CSR_PATH, {
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"generateName": f"user-{name.lower()[:40]}-".replace(":", "-")},
            "spec": {"request": base64.b64encode(csr).decode(), "signerName": SIGNER,
                     "usages": ["client auth"],
                     "expirationSeconds": int(lifetime.total_seconds())}})
        csr_name = created["metadata"]["name"]
        created.setdefault("status", {})["conditions"] = [{
            "type": "Approved", "status": "True", "reason": "AtollUserAdd",
            "message": f"approved by atoll user add for {name}"}]
        await client.update(f"{CSR_PATH}/{csr_name}/approval", created)
        cert = await _await_certificate(client, csr_name)
    finally:
        await client.close()
    return pki.kubeconfig(server=config.server, ca_pem=config.ca_pem, user=name,
                          cert_pem=cert, key_pem=key, namespace=namespace)


async def _await_certificate(client: ApiClient, csr_name: str, timeout: float = 30) -> bytes:
    """Watch the request until the signer fills in the certificate (or fails it)."""
    async def follow() -> bytes:
        while True:
            obj = await client.get(f"{CSR_PATH}/{csr_name}")
            found = _certificate_or_failure(obj)
            if found is not None:
                return found
            async for event in client.watch(CSR_PATH, resource_version=obj["metadata"]
                                            ["resourceVersion"], timeout_seconds=int(timeout),
                                            fieldSelector=f"metadata.name={csr_name}"):
                found = _certificate_or_failure(event.get("object") or {})
                if found is not None:
                    return found
    try:
        return await asyncio.wait_for(follow(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"the server did not sign certificate request {csr_name} within "
                           f"{timeout:.0f}s") from None


def _certificate_or_failure(obj: dict) -> bytes | None:
    status = obj.get("status") or {}
    if status.get("certificate"):
        return base64.b64decode(status["certificate"])
    for c in status.get("conditions") or []:
        if c.get("type") in ("Denied", "Failed"):
            raise RuntimeError(f"certificate request {c.get('type').lower()}: "
                               f"{c.get('message') or c.get('reason')}")
    return None
