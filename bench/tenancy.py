"""What tenancy costs a request: creates/s and gets/s as a cluster admin (no rule evaluated),
as a user whose Edit comes from a RoleBinding (RBAC on every request), and as that user in a
namespace with a ResourceQuota (each create charged in the same store transaction).

    .venv/bin/python bench/tenancy.py [--seconds 5] [--clients 32] [--bindings 200]

`atoll server` runs in its own process (one core each for server and load); the other
namespaces get ``--bindings`` unrelated RoleBindings each, so rule lookup is not trivially short.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ssl
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import Bench, pct  # noqa: E402
from atoll.apiserver import pki  # noqa: E402
from bench._up import api_server  # noqa: E402


def user_context(data: Path, name: str) -> ssl.SSLContext:
    ca = pki.CertPair(data / "pki" / "ca.crt", data / "pki" / "ca.key")
    csr, key = pki.client_csr(name)
    cert = pki.sign_client_csr(ca, csr, dt.timedelta(hours=1))
    work = Path(tempfile.mkdtemp())
    (work / "u.crt").write_bytes(cert)
    (work / "u.key").write_bytes(key)
    ctx = ssl.create_default_context(cafile=str(data / "pki" / "ca.crt"))
    ctx.load_cert_chain(work / "u.crt", work / "u.key")
    return ctx


async def post(b: Bench, path: str, body: dict) -> None:
    async with b.session() as s:
        async with s.post(b.url + path, data=orjson.dumps(body),
                          headers={"Content-Type": "application/json"}) as r:
            await r.read()
            assert r.status in (201, 409), (path, r.status)


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="atoll-bench-")) / "data"
    with api_server(data) as port:
        b = Bench(data, port)
        rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/{}/rolebindings"
        for ns in ("plain", "quota", "noise"):
            await b.ensure_ns(ns)
        for i in range(args.bindings):
            await post(b, rbac.format("noise"), {
                "metadata": {"name": f"b{i}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "view"},
                "subjects": [{"kind": "User", "name": f"someone-{i}"}]})
        for ns in ("plain", "quota"):
            await post(b, rbac.format(ns), {
                "metadata": {"name": "bench-edit"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "edit"},
                "subjects": [{"kind": "User", "name": "bench-user"}]})
        await post(b, "/api/v1/namespaces/quota/resourcequotas", {
            "metadata": {"name": "q"},
            "spec": {"hard": {"configmaps": "100000000", "count/configmaps": "100000000"}}})
        admin_ctx = b.ctx
        user_ctx = user_context(data, "bench-user")
        print(f"{args.clients} clients, {args.seconds:.0f} s each, {args.bindings} other "
              f"RoleBindings in the cluster\n")
        print(f"{'who':<34} {'creates/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'gets/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
        for label, ctx, ns in (("cluster admin (system:masters)", admin_ctx, "plain"),
                               ("user with Edit (RBAC evaluated)", user_ctx, "plain"),
                               ("user with Edit + a quota charged", user_ctx, "quota")):
            b.ctx = ctx
            rate_c, lat_c = await b.run_for(args.seconds, args.clients,
                                            lambda s, ns=ns: b.create(s, ns))
            rate_g, lat_g = await b.run_for(args.seconds, args.clients,
                                            lambda s, ns=ns: b.get(s, ns, "c1")
                                            if ns == "plain" else b.get(s, "plain", "c1"))
            print(f"{label:<34} {rate_c:10.0f} {pct(lat_c, .5):7.1f} {pct(lat_c, .99):7.1f} "
                  f"{rate_g:9.0f} {pct(lat_g, .5):7.1f} {pct(lat_g, .99):7.1f}")
        b.ctx = admin_ctx
        async with b.session() as s:
            async with s.get(b.url + "/api/v1/namespaces/quota/resourcequotas/q") as r:
                used = orjson.loads(await r.read())["status"]["used"]["configmaps"]
            async with s.get(b.url + "/api/v1/namespaces/quota/configmaps",
                             params={"limit": "1"}) as r:
                body = orjson.loads(await r.read())
        stored = 1 + int(body["metadata"].get("remainingItemCount", 0))
        print(f"\nquota used after the run: {used}; configmaps stored: {stored}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--bindings", type=int, default=200)
    asyncio.run(main(ap.parse_args()))
