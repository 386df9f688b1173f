"""What hostile requests cost everyone else: `/readyz` latency and the server's RSS before,
during and after a burst of request-sized attacks, beside a burst of benign requests of the
same sizes sent the same way.

    .venv/bin/python bench/hostile.py [--seconds 10] [--clients 4] [--watchers 1000]

`atoll server` runs alone in its own process on a scratch data dir. Creates are dry runs
(`dryRun=All`), so nothing accumulates in the store and RSS shows what requests cost. The requests come from a
user who holds only Edit in one namespace, as a hostile tenant would. A probe asks `/readyz`
every 20 ms throughout and reports p50/p99/max per phase; RSS is read from /proc.

Hostile set (each paired with a benign request of about the same size):
  - a 429-byte YAML alias bomb to selfsubjectaccessreviews   <-> a plain 429-byte SSAR in YAML
  - the same bomb as a ConfigMap                              <-> a plain YAML ConfigMap
  - JSON and YAML nested 100,000 levels (about 200 KB)       <-> a flat 200 KB ConfigMap
  - a custom resource whose value makes ``^(a+)+$`` backtrack <-> one that matches
  - a 3.2 MB ConfigMap (over the 3 MiB request limit)        <-> a 1 MB ConfigMap (data <= 1 MiB)
  - a JSON ConfigMap sent as text/plain                       <-> the same as application/json
  - malformed HTTP over TLS, and 1,000 watches opened and dropped
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from atoll.apiserver import pki  # noqa: E402
from bench._up import api_server  # noqa: E402

NS = "tenant"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
# creates are dry runs: every request is decoded, validated and admitted, nothing is kept, so
# RSS shows what a request costs, not what the store holds
CMS = f"/api/v1/namespaces/{NS}/configmaps?dryRun=All"
CRS = f"/apis/bench.example.com/v1/namespaces/{NS}/redos?dryRun=All"
WATCH = f"/api/v1/namespaces/{NS}/configmaps"
CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "redos.bench.example.com"},
       "spec": {"group": "bench.example.com", "scope": "Namespaced",
                "names": {"plural": "redos", "singular": "redo", "kind": "Redo"},
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                    "openAPIV3Schema": {"type": "object", "properties": {
                        "s": {"type": "string", "pattern": "^(a+)+$"}}}}}]}}

Request = tuple[str, str, str, bytes]  # method, path, content type, body


def yaml_bomb(head: str) -> bytes:
    lines = [head, 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for n in "bcdefghi":
        lines.append(f"{n}: &{n} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = n
    return ("\n".join(lines) + "\n").encode()


def padded_yaml(head: str, size: int) -> bytes:
    body = head + "\nmetadata: {generateName: p-, annotations: {pad: '"
    return (body + "x" * max(0, size - len(body) - 4) + "'}}\n").encode()


SSAR_HEAD = ("apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\n"
             "spec: {resourceAttributes: {verb: get, resource: pods}}")
CM_HEAD = "apiVersion: v1\nkind: ConfigMap"


def configmap(name: str, size: int) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"generateName": name + "-"}, "data": {"v": "x" * size}})


def hostile_set() -> list[Request]:
    bomb = yaml_bomb(SSAR_HEAD)
    deep_json = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"d-"},' \
        b'"data":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    deep_yaml = (CM_HEAD + "\nmetadata: {generateName: d-}\nx: ").encode() + \
        b"[" * 100_000 + b"]" * 100_000 + b"\n"
    redos = orjson.dumps({"apiVersion": "bench.example.com/v1", "kind": "Redo",
                          "metadata": {"generateName": "r-"}, "s": "a" * 40 + "!"})
    return [("POST", SSAR, "application/yaml", bomb),
            ("POST", CMS, "application/yaml", yaml_bomb(CM_HEAD + "\nmetadata: {name: b}")),
            ("POST", CMS, "application/json", deep_json),
            ("POST", CMS, "application/yaml", deep_yaml),
            ("POST", CRS, "application/json", redos),
            ("POST", CMS, "application/json", configmap("big", 3_200_000)),
            ("POST", CMS, "text/plain", configmap("tp", 100))]


def benign_set() -> list[Request]:
    good = orjson.dumps({"apiVersion": "bench.example.com/v1", "kind": "Redo",
                         "metadata": {"generateName": "r-"}, "s": "a" * 41})
    return [("POST", SSAR, "application/yaml", padded_yaml(SSAR_HEAD, 429)),
            ("POST", CMS, "application/yaml", padded_yaml(CM_HEAD, 429)),
            ("POST", CMS, "application/json", configmap("flat", 200_000)),
            ("POST", CMS, "application/json", configmap("flat", 200_000)),
            ("POST", CRS, "application/json", good),
            ("POST", CMS, "application/json", configmap("big", 1_000_000)),
            ("POST", CMS, "application/json", configmap("tp", 100))]


def server_pid(data: Path) -> int:
    """The `atoll server` process serving ``data`` (found by its command line)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"server" in cmd and str(data).encode() in cmd:
                return int(entry)
    raise RuntimeError("atoll server process not found")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tls(data: Path, user: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(data / "pki" / "ca.crt"))
    if user is None:
        ctx.load_cert_chain(data / "pki" / "admin.crt", data / "pki" / "admin.key")
        return ctx
    ca = pki.CertPair(data / "pki" / "ca.crt", data / "pki" / "ca.key")
    csr, key = pki.client_csr(user)
    work = Path(tempfile.mkdtemp())
    (work / "u.crt").write_bytes(pki.sign_client_csr(ca, csr, dt.timedelta(hours=1)))
    (work / "u.key").write_bytes(key)
    ctx.load_cert_chain(work / "u.crt", work / "u.key")
    return ctx


class Probe:
    """Asks /readyz every 20 ms and keeps the latencies of the current phase."""

    def __init__(self, url: str, ctx: ssl.SSLContext) -> None:
        self.url, self.ctx = url, ctx
        self.samples: list[float] = []
        self.failures = 0

    async def run(self) -> None:
        # a connection of its own, as a load balancer's health check has
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ctx, limit=1),
                                         timeout=aiohttp.ClientTimeout(total=10)) as s:
            while True:
                t = time.perf_counter()
                try:
                    async with s.get(self.url + "/readyz") as r:
                        await r.read()
                        ok = r.status == 200
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    ok = False
                self.samples.append(time.perf_counter() - t)
                self.failures += not ok
                await asyncio.sleep(0.02)

    def take(self) -> tuple[list[float], int]:
        samples, failures = self.samples, self.failures
        self.samples, self.failures = [], 0
        return samples, failures


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000 if s else float("nan")


async def burst(url: str, ctx: ssl.SSLContext, requests: list[Request], seconds: float,
                clients: int) -> dict[int, int]:
    """Send ``requests`` round-robin from ``clients`` connections for ``seconds``."""
    codes: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=120)) as s:
        async def worker(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop:
                method, path, ctype, body = requests[i % len(requests)]
                i += 1
                try:
                    async with s.request(method, url + path, data=body,
                                         headers={"Content-Type": ctype}) as r:
                        await r.content.read(1 << 20)  # never hold a huge answer
                        codes[r.status] = codes.get(r.status, 0) + 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    codes[0] = codes.get(0, 0) + 1
        await asyncio.gather(*(worker(n) for n in range(clients)))
    return codes


async def malformed_http(port: int, count: int) -> None:
    raw = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # an anonymous client: no certificate
    raw.check_hostname = False
    raw.verify_mode = ssl.CERT_NONE
    for i in range(count):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=raw)
            writer.write(b"GET /\x00\x01 HTTP/9.9\r\nX: " + b"y" * 2_000_000 + b"\r\n\r\n"
                         if i % 2 else b"\x16\x03garbage \r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.read(4096), 5)
            writer.close()
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass


async def watch_churn(url: str, ctx: ssl.SSLContext, watchers: int) -> None:
    """Open ``watchers`` watches, wait until each answered, then drop them all."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0),
                                     timeout=aiohttp.ClientTimeout(total=None)) as s:
        responses = await asyncio.gather(*(
            s.get(url + WATCH, params={"watch": "true", "timeoutSeconds": "600"})
            for _ in range(watchers)))
        for r in responses:
            r.close()


async def phase(label: str, probe: Probe, pid: int, work: Callable[[], Awaitable[object]],
                settle: float = 0.0) -> None:
    probe.take()
    peak = rss_mib(pid)
    task = asyncio.ensure_future(work())
    while not task.done():
        peak = max(peak, rss_mib(pid))
        await asyncio.sleep(0.1)
    detail = task.result()
    if settle:
        await asyncio.sleep(settle)  # what the server gives back once the burst has passed
    samples, failures = probe.take()
    print(f"{label:<30} {pct(samples, .5):7.1f} {pct(samples, .99):7.1f} "
          f"{max(samples) * 1000 if samples else float('nan'):8.1f} {failures:5d} "
          f"{peak:8.0f} {rss_mib(pid):8.0f}   {detail or ''}")


async def setup(url: str, admin: ssl.SSLContext) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=admin)) as s:
        async def post(path: str, body: dict) -> None:
            async with s.post(url + path, data=orjson.dumps(body),
                              headers={"Content-Type": "application/json"}) as r:
                assert r.status in (201, 409), (path, r.status, await r.text())
        await post("/api/v1/namespaces", {"metadata": {"name": NS}})
        await post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings", {
            "metadata": {"name": "mallory-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "edit"},
            "subjects": [{"kind": "User", "name": "mallory"}]})
        await post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
        await post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles", {
            "metadata": {"name": "redos"}, "rules": [{"apiGroups": ["bench.example.com"],
                                                      "resources": ["redos"], "verbs": ["*"]}]})
        await post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings", {
            "metadata": {"name": "mallory-redos"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "redos"},
            "subjects": [{"kind": "User", "name": "mallory"}]})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the CRD is served once Established
            async with s.get(url + CRS.split("?")[0]) as r:
                if r.status == 200:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError("CRD not established")


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="atoll-bench-")) / "data"
    with api_server(data) as port:
        url = f"https://127.0.0.1:{port}"
        admin, tenant = tls(data, None), tls(data, "mallory")
        await setup(url, admin)
        pid = server_pid(data)
        probe = Probe(url, admin)
        probing = asyncio.ensure_future(probe.run())
        print(f"{args.clients} clients, {args.seconds:.0f} s per burst; /readyz every 20 ms\n")
        print(f"{'phase':<30} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>8} {'fail':>5} "
              f"{'peak MiB':>8} {'RSS MiB':>8}   answers")
        await phase("idle", probe, pid, lambda: asyncio.sleep(args.seconds))
        await phase("benign burst", probe, pid,
                    lambda: burst(url, tenant, benign_set(), args.seconds, args.clients),
                    settle=2)
        await phase("hostile burst", probe, pid,
                    lambda: burst(url, tenant, hostile_set(), args.seconds, args.clients),
                    settle=2)
        await phase("malformed HTTP x200", probe, pid,
                    lambda: malformed_http(port, 200), settle=1)
        await phase(f"{args.watchers} watches dropped", probe, pid,
                    lambda: watch_churn(url, tenant, args.watchers), settle=5)
        await phase("idle after", probe, pid, lambda: asyncio.sleep(args.seconds))
        probing.cancel()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--watchers", type=int, default=1000)
    asyncio.run(main(ap.parse_args()))
