"""The Ingress router's TLS and websockets on a real host: certificates from `kubernetes.io/tls`
Secrets chosen by SNI (an exact host and a wildcard, two Secrets), the default fake certificate
for unknown names, a rotated Secret served without restart, plain HTTP redirected (308), the
backend answering over HTTPS, websocket echo over ws:// and wss://, what a host may read of
those Secrets, and an older atoll-ingress Service gaining port 443."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import TEST_NODE, Platform, kubectl_binary, wait_until

FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"

APP = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {echo_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-host
  namespace: {ns}
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: http, port: {echo_port}, protocol: TCP}}]
endpoints: [{{addresses: ["{echo_ip}"], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: {ns}}}
spec:
  tls:
  - hosts: [a.{ns}.example.test, ws.{ns}.example.test]
    secretName: tls-a
  - hosts: ["*.b.{ns}.example.test"]
    secretName: tls-b
  rules:
  - host: a.{ns}.example.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
  - host: "*.b.{ns}.example.test"
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
  - host: unknown.{ns}.example.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
  - host: ws.{ns}.example.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: echo, port: {{name: http}}}}}}}}]}}
  - host: plain.{ns}.example.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: echo, port: {{name: http}}}}}}}}]}}
"""


def _json(platform: Platform, *args: str) -> Any:
    return json.loads(platform.kubectl(*args, "-o", "json").stdout)


# -- certificates ------------------------------------------------------------------------------
class CA:
    """A CA of the test's own, signing the leaf certificates the Secrets carry."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ingress test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.path = tmp / "ca.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def leaf(self, cn: str, *names: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                               False)
                .sign(self.key, hashes.SHA256()))
        crt, pem = self.tmp / f"{cn}.crt", self.tmp / f"{cn}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        return crt, pem


def _served_cn(router: str, server_name: str) -> str:
    """The common name of the certificate the router shows for ``server_name``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((router, 443), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            der = s.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _curl(router: str, host: str, ca: Path, scheme: str = "https",
          *extra: str) -> subprocess.CompletedProcess[str]:
    port = 443 if scheme == "https" else 80
    return subprocess.run(["curl", "-sS", "--max-time", "5", "--resolve", f"{host}:{port}:{router}",
                           "--cacert", str(ca), "-w", "\n%{http_code}", *extra,
                           f"{scheme}://{host}/"], capture_output=True, text=True)


def _answer(out: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """(body, status) of a ``_curl``."""
    body, _, code = out.stdout.rpartition("\n")
    return body.strip(), code


# -- a websocket echo server on the host ------------------------------------------------------
class EchoServer:
    """aiohttp on the bridge's address, in a thread of its own: websocket echo at /ws, the
    forwarded headers as JSON elsewhere."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the echo server did not start"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != "/ws":
            return web.json_response({k: request.headers.get(k) for k in
                                      ("X-Forwarded-Proto", "X-Forwarded-Host", "Host")})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
        return ws

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        sock = socket.socket()
        sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
        sock.bind((self.address, 0))
        self.port = sock.getsockname()[1]
        self.loop.run_until_complete(web.SockSite(self.runner, sock).start())
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def site(platform: Platform, namespace: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    # this platform's router itself: every test platform on this host claims the host's
    # ports 80 and 443 for its own router, and whichever table nftables hooks first wins
    router = wait_until("the router's own slice", lambda: [
        sl["endpoints"][0]["addresses"][0] for sl in _json(
            platform, "-n", "kube-system", "get", "endpointslices", "-l",
            "kubernetes.io/service-name=atoll-ingress")["items"]
        if sl["endpoints"][0].get("nodeName") == TEST_NODE
        and any(p.get("port") == 443 for p in sl.get("ports") or [])], 60)[0]
    echo = EchoServer(router)
    try:
        ca = CA(tmp_path)
        ns = namespace
        platform.kubectl("apply", "-f", "-", input=APP.format(ns=ns, echo_ip=router,
                                                              echo_port=echo.port))
        a = ca.leaf(f"a.{ns}.example.test", f"a.{ns}.example.test", f"ws.{ns}.example.test")
        b = ca.leaf(f"b.{ns}.example.test", f"*.b.{ns}.example.test")
        for name, (crt, key) in (("tls-a", a), ("tls-b", b)):
            platform.kubectl("-n", ns, "create", "secret", "tls", name, "--cert", str(crt),
                             "--key", str(key))
        wait_until("the web pod ready", lambda: any(
            (c.get("type"), c.get("status")) == ("Ready", "True")
            for p in _json(platform, "-n", ns, "get", "pods", "-l", "app=web")["items"]
            for c in (p.get("status") or {}).get("conditions") or []), 90)
        yield {"ns": ns, "router": router, "ca": ca, "echo": echo}
    finally:
        echo.stop()


def test_certificates_by_sni_redirects_and_https_to_the_backend(platform: Platform,
                                                                site: dict) -> None:
    ns, router, ca = site["ns"], site["router"], site["ca"]
    a, b = f"a.{ns}.example.test", f"x.b.{ns}.example.test"
    wait_until("the router serving a's certificate", lambda: _served_cn(router, a) == a, 30)
    assert _served_cn(router, b) == f"b.{ns}.example.test"  # the wildcard's Secret
    assert _served_cn(router, f"y.x.b.{ns}.example.test") == FAKE_CN  # one label only
    assert _served_cn(router, f"unknown.{ns}.example.test") == FAKE_CN
    pod = _json(platform, "-n", ns, "get", "pods", "-l", "app=web")["items"][0]["metadata"][
        "name"]
    for host in (a, b):  # verified against the test's CA, by name: the right certificate
        out = _curl(router, host, ca.path)
        assert _answer(out) == (pod, "200"), out
    out = _curl(router, f"unknown.{ns}.example.test", ca.path)
    assert out.returncode == 60, out  # the fake certificate is nobody's
    out = _curl(router, f"unknown.{ns}.example.test", ca.path, "https", "-k")
    assert _answer(out) == (pod, "200"), out  # but the route answers
    # plain HTTP: hosts with a certificate are redirected, others are served
    out = _curl(router, a, ca.path, "http", "-D", "-")
    assert out.stdout.endswith("\n308") and f"location: https://{a}/" in out.stdout.lower(), out
    assert _answer(_curl(router, f"unknown.{ns}.example.test", ca.path, "http")) == (pod, "200")
    # a rotated Secret is served without a restart
    crt, key = ca.leaf(f"a2.{ns}.example.test", a)
    secret = platform.kubectl("-n", ns, "create", "secret", "tls", "tls-a", "--cert", str(crt),
                              "--key", str(key), "--dry-run=client", "-o", "json").stdout
    platform.kubectl("apply", "-f", "-", input=secret)
    wait_until("the rotated certificate served",
               lambda: _served_cn(router, a) == f"a2.{ns}.example.test", 30)
    # a Secret that does not load leaves the router up, showing the fake certificate
    platform.kubectl("-n", ns, "patch", "secret", "tls-b", "--type", "merge", "-p",
                     json.dumps({"data": {"tls.key": "bm90IGEga2V5"}}))
    wait_until("the bad Secret passed over", lambda: _served_cn(router, b) == FAKE_CN, 30)
    assert _answer(_curl(router, a, ca.path)) == (pod, "200")


def test_websockets_through_the_router(site: dict) -> None:
    ns, router, ca = site["ns"], site["router"], site["ca"]

    async def run() -> None:
        class Router(aiohttp.abc.AbstractResolver):
            async def resolve(self, host: str, port: int = 0,
                              family: int = socket.AF_INET) -> list[dict[str, Any]]:
                return [{"hostname": host, "host": router, "port": port,
                         "family": socket.AF_INET, "proto": 0, "flags": 0}]

            async def close(self) -> None:
                pass

        ctx = ssl.create_default_context(cafile=str(ca.path))
        connector = aiohttp.TCPConnector(resolver=Router(), ssl=ctx)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=20)) as session:
            async with session.get(f"https://ws.{ns}.example.test/headers") as r:
                assert r.status == 200, await r.text()
                seen = await r.json()
                assert seen["X-Forwarded-Proto"] == "https"
                assert seen["Host"] == f"ws.{ns}.example.test"
            for url in (f"ws://plain.{ns}.example.test/ws", f"wss://ws.{ns}.example.test/ws"):
                async with session.ws_connect(url) as ws:
                    for i in range(3):
                        await ws.send_str(f"{url} {i}")
                        assert await ws.receive_str(timeout=10) == f"echo:{url} {i}"

    wait_until("the router routing to the echo server", lambda: _curl(
        router, f"plain.{ns}.example.test", ca.path, "http").stdout.endswith("\n200"), 30)
    asyncio.run(run())


def test_a_host_reads_only_the_tls_secrets_of_atoll_ingresses(platform: Platform, site: dict,
                                                              tmp_path: Path) -> None:
    ns = site["ns"]
    kc = tmp_path / "node.kubeconfig"
    kc.write_text(subprocess.run(
        [sys.executable, "-m", "atoll.cli.main", "kubeconfig", "--data-dir",
         str(platform.data_dir), "--node", "tls-reader"], capture_output=True, text=True,
        check=True, timeout=60).stdout)
    env = dict(os.environ, KUBECONFIG=str(kc), KUBECACHEDIR=str(tmp_path / "cache"))

    def k(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), "-n", ns, *args], capture_output=True,
                              text=True, env=env, timeout=60)

    other = f"other-{uuid.uuid4().hex[:6]}"
    platform.kubectl("-n", ns, "create", "secret", "generic", other, "--from-literal=a=b")
    assert k("get", "secret", "tls-a").returncode == 0
    out = k("get", "secrets", "--field-selector", "metadata.name=tls-b")  # a list of one
    assert out.returncode == 0 and "tls-b" in out.stdout, out.stderr
    out = k("get", "secret", other)
    assert out.returncode != 0 and "Forbidden" in out.stderr, out.stderr
    assert "no relationship found" in out.stderr, out.stderr
    assert k("get", "secrets").returncode != 0  # no listing at large
    # another class's Ingress gives hosts nothing
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "theirs", "namespace": ns},
        "spec": {"ingressClassName": "nginx", "tls": [{"secretName": other}],
                 "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}))
    assert k("get", "secret", other).returncode != 0
    # once no Ingress names it, the host loses it
    platform.kubectl("-n", ns, "delete", "ingress", "web")
    out = k("get", "secret", "tls-a")
    assert out.returncode != 0 and "Forbidden" in out.stderr, out.stderr


def test_an_older_ingress_service_gains_port_443(platform: Platform) -> None:
    def ports() -> list[dict]:
        return _json(platform, "-n", "kube-system", "get", "service", "atoll-ingress")[
            "spec"]["ports"]

    before = ports()
    http = next(p for p in before if p["name"] == "http")
    https = next(p for p in before if p["name"] == "https")
    assert https["port"] == 443 and https["targetPort"] == 443
    index = before.index(https)
    platform.kubectl("-n", "kube-system", "patch", "service", "atoll-ingress", "--type", "json",
                     "-p", json.dumps([{"op": "remove", "path": f"/spec/ports/{index}"}]))
    # the API server's bootstrap runs again with its lease renewal (every 10 s)
    after = wait_until("port 443 back", lambda: next(
        (ports_ for ports_ in [ports()] if any(p["name"] == "https" for p in ports_)), None), 45)
    assert next(p for p in after if p["name"] == "http") == http  # its node port kept
