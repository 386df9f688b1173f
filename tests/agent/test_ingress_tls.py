"""The router's TLS: which Secret each SNI name selects (exact before one-label wildcards,
classes, unusable Secrets passed over), Secrets loaded and cached by resourceVersion, bad
ones skipped, and real handshakes on loopback that show the selected certificate or the
default fake one; then plain HTTP, the 308 to HTTPS, and websockets through the router over
ws:// and wss:// to an echo server on loopback."""

from __future__ import annotations

import asyncio
import base64
import datetime
import socket
import ssl
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from atoll.agent.ingress import tls
from atoll.agent.ingress.proxy import IngressProxy


def _ing(name: str, tls_entries: list, cls: str | None = None, ns: str = "ns",
         rules: list | None = None) -> dict:
    spec: dict = {"tls": tls_entries, "rules": rules or []}
    if cls:
        spec["ingressClassName"] = cls
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


INGRESSES = [
    _ing("a", [{"hosts": ["shop.example", "*.example"], "secretName": "wild"}]),
    _ing("b", [{"hosts": ["api.example"], "secretName": "api"},
               {"hosts": ["Shop.Example"], "secretName": "later"}]),
    _ing("c", [{"hosts": ["nginx.example"], "secretName": "theirs"}], cls="nginx"),
    _ing("d", [{"secretName": "no-hosts"}, {"hosts": ["x.example"]}, "junk",
               {"hosts": [7, "seven.example"], "secretName": "seven"}]),
]


def _pick(name: str, usable: Any = lambda ref: True) -> str | None:
    ref = tls.select(tls.tls_entries(INGRESSES), name, usable)
    return ref[1] if ref else None


def test_exact_hosts_before_one_label_wildcards() -> None:
    assert _pick("api.example") == "api"  # exact, though a's wildcard comes first
    assert _pick("shop.example") == "wild"  # the first Ingress (ns/name order) wins
    assert _pick("SHOP.example.") == "wild"  # case and a trailing dot do not matter
    assert _pick("any.example") == "wild"
    assert _pick("a.b.example") is None and _pick("example") is None  # one label only
    assert _pick("nginx.example") == "wild"  # the nginx-class entry is not ours
    assert _pick("seven.example") == "seven" and _pick("") is None


def test_an_unusable_secret_is_passed_over() -> None:
    assert _pick("api.example", lambda ref: ref[1] != "api") == "wild"
    assert _pick("shop.example", lambda ref: ref[1] != "wild") == "later"


def test_referenced_secrets() -> None:
    assert tls.secret_refs(INGRESSES) == {("ns", "wild"), ("ns", "api"), ("ns", "later"),
                                          ("ns", "no-hosts"), ("ns", "seven")}


# -- certificates and handshakes ---------------------------------------------------------------
def _cert(*names: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _secret(name: str, pem: tuple[bytes, bytes], rv: str = "1") -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(pem[0]).decode(),
                     "tls.key": base64.b64encode(pem[1]).decode()}}


class FakeInformer:
    """Just the informer surface the router reads."""

    def __init__(self, items: list[dict] | None = None, index: dict | None = None) -> None:
        self.items = items or []
        self.index = index or {}
        self.handlers: list = []

    def list(self) -> list[dict]:
        return list(self.items)

    def get(self, key: str) -> dict | None:
        return next((i for i in self.items if
                     f"{i['metadata'].get('namespace')}/{i['metadata']['name']}" == key), None)

    def by_index(self, _name: str, value: str) -> list[dict]:
        return self.index.get(value, [])

    def add_handler(self, h: Any) -> None:
        self.handlers.append(h)


def test_contexts_are_cached_by_resource_version_and_bad_secrets_skipped(caplog) -> None:
    certs = tls.Certificates(FakeInformer(INGRESSES))
    certs.update(("ns", "api"), _secret("api", _cert("api.example")))
    first = certs.context_for("api.example")
    assert first is not certs.default
    certs.update(("ns", "api"), _secret("api", _cert("api.example")))  # same version: kept
    assert certs.context_for("api.example") is first
    certs.update(("ns", "api"), _secret("api", _cert("api.example"), rv="2"))
    assert certs.context_for("api.example") is not first
    for rv, bad in enumerate(({"data": {"tls.crt": "!!", "tls.key": "x"}}, {"data": "nope"},
                              {"data": {"tls.crt": base64.b64encode(b"junk").decode(),
                                        "tls.key": base64.b64encode(b"junk").decode()}},
                              {"data": {"tls.crt": "", "tls.key": ""}},
                              _secret("api", (_cert("a")[0], _cert("b")[1]))), start=3):
        certs.update(("ns", "api"), {**bad, "metadata": {"resourceVersion": str(rv)}})
        assert certs.context_for("api.example") is certs.default
    assert caplog.text.count("ingress TLS secret ns/api skipped") == 5
    assert not certs.secured("api.example")
    certs.update(("ns", "wild"), _secret("wild", _cert("*.example")))
    assert certs.context_for("any.example") is not certs.default
    assert certs.secured("any.example:80")
    assert certs.secured("api.example")  # its own Secret is bad: the wildcard's serves it
    certs.update(("ns", "wild"), None)
    assert certs.context_for("any.example") is certs.default and certs.context_for(None) \
        is certs.default


async def _peer_cn(port: int, server_name: str | None) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                              server_hostname=server_name)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


async def test_the_handshake_shows_the_certificate_sni_selects() -> None:
    certs = tls.Certificates(FakeInformer(INGRESSES))
    certs.update(("ns", "api"), _secret("api", _cert("api.example")))
    certs.update(("ns", "wild"), _secret("wild", _cert("*.example")))
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0,
                                        ssl=certs.default)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await _peer_cn(port, "api.example") == "api.example"
        assert await _peer_cn(port, "shop.example") == "*.example"
        assert await _peer_cn(port, "unknown.test") == tls.FAKE_CN
        assert await _peer_cn(port, None) == tls.FAKE_CN  # no SNI at all
    finally:
        server.close()
        await server.wait_closed()


# -- the router on loopback ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def router(tmp_path):
    """An echo backend (websocket at /ws, headers at /) behind the router on loopback."""
    async def echo(request: web.Request) -> web.StreamResponse:
        if request.path != "/ws":
            return web.json_response({"proto": request.headers.get("X-Forwarded-Proto"),
                                      "upgrade": request.headers.get("Upgrade")})
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    backend_port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", backend_port).start()
    rule = {"host": "ws.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "echo", "port": {"number": 80}}}}]}}
    ingresses = FakeInformer([_ing("e", [{"hosts": ["ws.example"], "secretName": "ws"}],
                                   rules=[rule, {**rule, "host": "plain.example"}])])
    services = FakeInformer([{"metadata": {"name": "echo", "namespace": "ns"},
                              "spec": {"ports": [{"name": "http", "port": 80}]}}])
    slices = FakeInformer(index={"ns/echo": [{
        "addressType": "IPv4", "ports": [{"name": "http", "port": backend_port}],
        "endpoints": [{"addresses": ["127.0.0.1"]}]}]})
    proxy = IngressProxy(ingresses, services, slices, "127.0.0.1", port=_free_port(),
                         tls_port=_free_port())
    await proxy.start()
    assert proxy.certificates is not None
    pem = _cert("ws.example")
    proxy.certificates.update(("ns", "ws"), _secret("ws", pem))
    (tmp_path / "ca.crt").write_bytes(pem[0])
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    yield proxy, client_ctx
    await proxy.stop()
    await runner.cleanup()


def _resolve(port_of: dict[str, int]) -> aiohttp.abc.AbstractResolver:
    class Loopback(aiohttp.abc.AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
            return [{"hostname": host, "host": "127.0.0.1", "port": port_of.get(host, port),
                     "family": socket.AF_INET, "proto": 0, "flags": 0}]

        async def close(self) -> None:
            pass
    return Loopback()


async def test_http_https_redirect_and_websockets_through_the_router(router) -> None:
    proxy, client_ctx = router
    connector = aiohttp.TCPConnector(resolver=_resolve({}), ssl=client_ctx)
    async with aiohttp.ClientSession(connector=connector) as session:
        http, https = f"{proxy.port}", f"{proxy.tls_port}"
        async with session.get(f"http://plain.example:{http}/") as r:
            assert r.status == 200 and (await r.json())["proto"] == "http"
        async with session.get(f"http://ws.example:{http}/x?y=1",
                               allow_redirects=False) as r:
            assert r.status == 308
            assert r.headers["Location"] == f"https://ws.example:{https}/x?y=1"
        async with session.get(f"https://ws.example:{https}/") as r:
            assert r.status == 200 and (await r.json())["proto"] == "https"
        # a declined upgrade is an ordinary answer
        async with session.get(f"https://ws.example:{https}/other", headers={
                "Connection": "Upgrade", "Upgrade": "h2c"}) as r:
            assert r.status == 200 and (await r.json())["upgrade"] == "h2c"
        for url in (f"ws://plain.example:{http}/ws", f"wss://ws.example:{https}/ws"):
            async with session.ws_connect(url) as ws:
                for i in range(3):
                    await ws.send_str(f"hello {i}")
                    assert (await ws.receive_str(timeout=5)) == f"echo:hello {i}"
                big = bytes(range(256)) * 8192  # 2 MiB: back-pressure both ways
                await ws.send_bytes(big)
                assert (await ws.receive_bytes(timeout=10)) == big
