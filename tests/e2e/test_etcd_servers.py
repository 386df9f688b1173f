"""Several API servers over one 3-member etcd: one API, whichever server answers; atomic
quotas across servers; an API server or an etcd member killed under load loses nothing."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from atoll.client import kubeconfig
from atoll.client.rest import ApiClient
from tests.conftest import free_port, wait_until
from tests.etcd import count_keys, start_etcd


class Server:
    def __init__(self, work: Path, name: str, datastore: str, ca_from: Path | None = None,
                 *extra: str):
        self.data = work / name
        self.port = free_port()
        args = [sys.executable, "-m", "atoll.cli.main", "server", "--data-dir", str(self.data),
                "--port", str(self.port), "--datastore", datastore]
        if ca_from:
            args += ["--ca-from", str(ca_from)]
        args += list(extra)
        self.proc = subprocess.Popen(args, stdout=open(work / f"{name}.log", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"https://127.0.0.1:{self.port}"

    def ready(self, ca: Path) -> bool:
        ctx = ssl.create_default_context(cafile=str(ca))
        try:
            with urllib.request.urlopen(self.url + "/readyz", context=ctx, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def cluster(tmp_path: Path):
    etcd = start_etcd(tmp_path, members=3)
    one = Server(tmp_path, "s1", etcd.url)
    wait_until("server 1", lambda: (one.data / "admin.kubeconfig").exists(), 60)
    two = Server(tmp_path, "s2", etcd.url, ca_from=one.data)
    ca = one.data / "pki" / "ca.crt"
    wait_until("both ready", lambda: one.ready(ca) and two.ready(ca), 60)
    yield etcd, one, two
    for s in (one, two):
        s.kill()
    etcd.stop()


def context(one: Server) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(one.data / "pki" / "ca.crt"))
    ctx.load_cert_chain(one.data / "pki" / "admin.crt", one.data / "pki" / "admin.key")
    return ctx


def call(url: str, ctx: ssl.SSLContext, method: str, path: str, body: dict | None = None
         ) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, method=method,
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_one_api_across_servers(cluster) -> None:
    _, one, two = cluster
    ctx = context(one)
    call(one.url, ctx, "POST", "/api/v1/namespaces", {"metadata": {"name": "shared"}})
    code, listing = call(two.url, ctx, "GET", "/api/v1/namespaces/shared/configmaps")
    assert code == 200
    rv = listing["metadata"]["resourceVersion"]
    code, _ = call(one.url, ctx, "POST", "/api/v1/namespaces/shared/configmaps",
                   {"metadata": {"name": "via-one"}})
    assert code == 201
    # a watch on server 2 from a resourceVersion server 2 gave sees server 1's write
    req = urllib.request.Request(two.url + f"/api/v1/namespaces/shared/configmaps?watch=1&"
                                 f"resourceVersion={rv}&timeoutSeconds=5")
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        events = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    assert ("ADDED", "via-one") in [(e["type"], e["object"]["metadata"]["name"]) for e in events]


def test_quota_holds_across_servers(cluster) -> None:
    _, one, two = cluster
    ctx = context(one)
    call(one.url, ctx, "POST", "/api/v1/namespaces", {"metadata": {"name": "q"}})
    call(one.url, ctx, "POST", "/api/v1/namespaces/q/resourcequotas",
         {"metadata": {"name": "q"}, "spec": {"hard": {"count/configmaps": "10"}}})

    def create(i: int) -> int:
        url = one.url if i % 2 else two.url
        return call(url, ctx, "POST", "/api/v1/namespaces/q/configmaps",
                    {"metadata": {"name": f"c{i}"}})[0]
    with cf.ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(create, range(50)))
    _, listing = call(two.url, ctx, "GET", "/api/v1/namespaces/q/configmaps")
    ours = [c for c in listing["items"] if c["metadata"]["name"].startswith("c")]
    assert codes.count(201) == len(ours) <= 10 and len(listing["items"]) == 10, codes


def test_services_addresses_hold_across_servers_and_kubernetes_lists_each(cluster) -> None:
    _, one, two = cluster
    ctx = context(one)
    call(one.url, ctx, "POST", "/api/v1/namespaces", {"metadata": {"name": "svc"}})

    def create(i: int, ip: str = "") -> int:
        spec: dict = {"ports": [{"port": 80}]}
        if ip:
            spec["clusterIP"] = ip
        return call(one.url if i % 2 else two.url, ctx, "POST", "/api/v1/namespaces/svc/services",
                    {"metadata": {"name": f"s{i}"}, "spec": spec})[0]
    # the same address asked for through both servers at once: the store gives it to one
    with cf.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda i: create(i, "10.96.0.77"), range(20)))
    assert codes.count(201) == 1 and codes.count(422) == 19, codes
    with cf.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(create, range(100, 130)))
    assert codes == [201] * 30
    _, listing = call(two.url, ctx, "GET", "/api/v1/namespaces/svc/services")
    ips = [s["spec"]["clusterIP"] for s in listing["items"]]
    assert len(ips) == len(set(ips)) == 31

    def ports() -> set[int]:
        _, ep = call(one.url, ctx, "GET", "/api/v1/namespaces/default/endpoints/kubernetes")
        return {p["port"] for s in ep.get("subsets") or [] for p in s["ports"]}
    wait_until("both servers in default/kubernetes", lambda: ports() == {one.port, two.port}, 30)
    two.proc.send_signal(signal.SIGTERM)  # a clean stop leaves at once, not at lease expiry
    two.proc.wait(30)
    wait_until("server 2 gone from default/kubernetes", lambda: ports() == {one.port}, 10)


def test_killing_a_server_or_an_etcd_member_loses_no_acknowledged_write(cluster) -> None:
    etcd, one, two = cluster
    ctx = context(one)
    call(one.url, ctx, "POST", "/api/v1/namespaces", {"metadata": {"name": "load"}})

    async def load(seconds: float) -> list[str]:
        config = kubeconfig.load(one.data / "admin.kubeconfig")
        config.server = f"{one.url},{two.url}"  # fail over to server 2
        client = ApiClient(config)
        acked: list[str] = []
        stop = time.monotonic() + seconds

        async def writer(w: int) -> None:
            i = 0
            while time.monotonic() < stop:
                name = f"w{w}-{i}"
                i += 1
                try:
                    await client.create("/api/v1/namespaces/load/configmaps",
                                        {"metadata": {"name": name}})
                    acked.append(name)
                except Exception:  # the write may or may not have happened: not acknowledged
                    await asyncio.sleep(0.05)
        try:
            await asyncio.gather(*(writer(w) for w in range(8)))
        finally:
            await client.close()
        return acked

    async def faults() -> None:
        await asyncio.sleep(1.5)
        one.kill()                      # an API server dies
        await asyncio.sleep(1.5)
        os.killpg(etcd.procs[2].pid, signal.SIGKILL)  # and one etcd member of three

    async def run() -> list[str]:
        acked, _ = await asyncio.gather(load(6.0), faults())
        return acked
    acked = asyncio.run(run())
    _, listing = call(two.url, ctx, "GET", "/api/v1/namespaces/load/configmaps")
    stored = [c["metadata"]["name"] for c in listing["items"]]
    assert len(acked) > 50, len(acked)
    missing = set(acked) - set(stored)
    assert not missing, sorted(missing)[:10]
    assert len(stored) == len(set(stored))
    # the killed member rejoins and holds the same data
    etcd.restart(2)
    wait_until("the member back", lambda: etcd.healthy(2), 60)
    wait_until("the member caught up", lambda: count_keys(
        etcd, 2, "/registry/core/configmaps/load/") == len(stored), 60)


def test_a_partitioned_server_refuses_writes_and_catches_up(tmp_path: Path) -> None:
    """Server 1 reaches etcd through a relay the test cuts: it answers writes with 503
    (never a stale success) while server 2 goes on; back on the network, it sees everything."""
    from tests.e2e.test_vm_ha import Cuttable

    etcd = start_etcd(tmp_path, members=1)
    relay = Cuttable(etcd.clients[0])
    one = Server(tmp_path, "p1", f"etcd://127.0.0.1:{relay.port}")
    wait_until("server 1", lambda: (one.data / "admin.kubeconfig").exists(), 60)
    two = Server(tmp_path, "p2", etcd.url, ca_from=one.data)
    ca = one.data / "pki" / "ca.crt"
    try:
        wait_until("both ready", lambda: one.ready(ca) and two.ready(ca), 60)
        ctx = context(one)
        call(two.url, ctx, "POST", "/api/v1/namespaces", {"metadata": {"name": "part"}})
        relay.cut()
        code, status = call(one.url, ctx, "POST", "/api/v1/namespaces/part/configmaps",
                            {"metadata": {"name": "from-the-island"}})
        assert code == 503 and status["reason"] == "ServiceUnavailable", (code, status)
        code, _ = call(two.url, ctx, "POST", "/api/v1/namespaces/part/configmaps",
                       {"metadata": {"name": "from-the-mainland"}})
        assert code == 201
        relay.restore()
        wait_until("server 1 to catch up", lambda: call(
            one.url, ctx, "GET", "/api/v1/namespaces/part/configmaps/from-the-mainland")[0]
            == 200, 30)
        assert call(two.url, ctx, "GET",
                    "/api/v1/namespaces/part/configmaps/from-the-island")[0] == 404
    finally:
        relay.close()
        for s in (one, two):
            s.kill()
        etcd.stop()


def test_servers_join_through_the_datastore_with_a_token(tmp_path: Path) -> None:
    etcd = start_etcd(tmp_path, members=1)
    token = "correct-horse-battery-staple"
    one = Server(tmp_path, "j1", etcd.url, None, "--join-token", token)
    servers = [one]
    try:
        wait_until("server 1", lambda: (one.data / "admin.kubeconfig").exists(), 60)
        two = Server(tmp_path, "j2", etcd.url, None, "--join-token", token)
        servers.append(two)
        ca = one.data / "pki" / "ca.crt"
        wait_until("server 2", lambda: two.ready(ca), 60)
        assert (two.data / "pki" / "ca.crt").read_bytes() == ca.read_bytes()
        assert (two.data / "pki" / "sa.key").read_bytes() == \
            (one.data / "pki" / "sa.key").read_bytes()
        code, _ = call(two.url, context(one), "GET", "/api/v1/namespaces")  # one's admin cert
        assert code == 200
        wrong = Server(tmp_path, "j3", etcd.url, None, "--join-token", "not-the-right-token!")
        servers.append(wrong)
        assert wrong.proc.wait(60) != 0
        assert "wrong token" in (tmp_path / "j3.log").read_text()
        assert not (wrong.data / "pki" / "ca.key").exists()
    finally:
        for s in servers:
            s.kill()
        etcd.stop()

