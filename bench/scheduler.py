"""Scheduler throughput: pods bound per second with 1,000 simulated nodes.

    .venv/bin/python bench/scheduler.py [--nodes 1000] [--pods 2000] [--clients 32]
                                        [--profile FILE]

Starts `atoll server` and `atoll controller-manager` (the scheduler runs inside it; no agent)
on a scratch data dir, creates N Node objects (Ready, 4 cpu, 16 GiB, 110 pods, 10 zones) and
one object that controls every pod (so the scheduler spreads them as one workload's; a
ConfigMap, since no controller acts on it: a ReplicaSet of 0 replicas, as used before, deletes
the pods as surplus while the scheduler binds them, a race the bench lost now and then), then
creates the pods
from C concurrent clients and watches them being bound.  Each side is its own process, as
in production, so on a 2-core machine three processes share two cores.

Prints pods bound per second from the first create to the last binding seen on the watch,
the create-to-bound latency, and how evenly the pods were spread.  ``--profile FILE`` runs
the controller manager under cProfile and writes its stats to FILE on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import free_port  # noqa: E402

NS = "bench"
JSON = {"Content-Type": "application/json"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000 if s else float("nan")


class Bench:
    def __init__(self, data: Path, port: int) -> None:
        self.url = f"https://127.0.0.1:{port}"
        pki = data / "pki"
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")

    def session(self, limit: int = 64) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(self.url,
                                     connector=aiohttp.TCPConnector(ssl=self.ctx, limit=limit),
                                     timeout=aiohttp.ClientTimeout(total=120))

    async def wait_ready(self) -> None:
        async with self.session() as s:
            while True:
                try:
                    async with s.get("/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    @staticmethod
    async def post(s: aiohttp.ClientSession, path: str, body: dict) -> dict:
        async with s.post(path, data=orjson.dumps(body), headers=JSON) as r:
            payload = orjson.loads(await r.read())
            if r.status >= 300:
                raise RuntimeError(f"POST {path}: {r.status} {payload.get('message')}")
            return payload

    async def many(self, s: aiohttp.ClientSession, clients: int, path: str,
                   bodies: list[dict]) -> None:
        it = iter(bodies)

        async def worker() -> None:
            for body in it:
                await self.post(s, path, body)
        await asyncio.gather(*(worker() for _ in range(clients)))


def node_body(i: int, zones: int) -> dict:
    name = f"node-{i:04d}"
    res = {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {"metadata": {"name": name, "labels": {
        "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": f"zone-{i % zones}",
        "bench": "yes"}},
        "status": {"capacity": res, "allocatable": res,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def pod_body(name: str, owner: dict | None, selector: dict[str, str] | None = None) -> dict:
    meta: dict = {"name": name, "labels": {"app": "bench"}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                    "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"], "controller": True}]
    spec: dict = {"containers": [{"name": "c", "image": "busybox",
                                  "resources": {"requests": {"cpu": "100m",
                                                             "memory": "64Mi"}}}]}
    if selector:
        spec["nodeSelector"] = selector
    return {"metadata": meta, "spec": spec}


async def run(args: argparse.Namespace, b: Bench, pids: dict[str, int]) -> None:
    async with b.session() as s:
        await b.post(s, "/api/v1/namespaces", {"metadata": {"name": NS}})
        t = time.perf_counter()
        await b.many(s, args.clients, "/api/v1/nodes",
                     [node_body(i, args.zones) for i in range(args.nodes)])
        print(f"{args.nodes} nodes created in {time.perf_counter() - t:.1f} s")
        owner = None
        if not args.no_owner:
            owner = await b.post(s, f"/api/v1/namespaces/{NS}/configmaps",
                                 {"metadata": {"name": "bench"}})
        # a pod pinned (by selector) to the last node: once it is bound the scheduler has
        # seen every node, and the measured run starts from a warm scheduler
        last = f"node-{args.nodes - 1:04d}"
        async with s.get(f"/api/v1/namespaces/{NS}/pods") as r:
            rv = orjson.loads(await r.read())["metadata"]["resourceVersion"]
        await b.post(s, f"/api/v1/namespaces/{NS}/pods",
                     pod_body("warmup", None, {"kubernetes.io/hostname": last}))

        bound: dict[str, float] = {}
        nodes: collections.Counter[str] = collections.Counter()
        warm = asyncio.Event()
        done = asyncio.Event()

        async def watch() -> None:
            async with s.get(f"/api/v1/namespaces/{NS}/pods",
                             params={"watch": "true", "resourceVersion": rv,
                                     "timeoutSeconds": "600"},
                             timeout=aiohttp.ClientTimeout(total=None)) as r:
                async for line in r.content:
                    ev = orjson.loads(line)
                    obj = ev["object"]
                    name, node = obj["metadata"]["name"], obj["spec"].get("nodeName")
                    if not node or name in bound:
                        continue
                    if name == "warmup":
                        warm.set()
                        continue
                    bound[name] = time.perf_counter()
                    nodes[node] += 1
                    if len(bound) == args.pods:
                        done.set()
                        return

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(warm.wait(), 120)

        created: dict[str, float] = {}
        names = [f"p{i:05d}" for i in range(args.pods)]
        it = iter(names)

        async def creator() -> None:
            for name in it:
                created[name] = time.perf_counter()
                await b.post(s, f"/api/v1/namespaces/{NS}/pods", pod_body(name, owner))

        cpu0 = {role: cpu_seconds(pid) for role, pid in pids.items()}
        t0 = time.perf_counter()
        await asyncio.gather(*(creator() for _ in range(args.clients)))
        t_created = time.perf_counter()
        await asyncio.wait_for(done.wait(), 600)
        t_bound = max(bound.values())
        cpu = {role: cpu_seconds(pid) - cpu0[role] for role, pid in pids.items()}
        watcher.cancel()
        async with s.get(f"/api/v1/namespaces/{NS}/events") as r:
            events = len(orjson.loads(await r.read())["items"])

    latency = [bound[n] - created[n] for n in names]
    elapsed = t_bound - t0
    print(f"{args.pods} pods created in {t_created - t0:.2f} s "
          f"({args.pods / (t_created - t0):.0f} creates/s, {args.clients} clients)")
    print(f"all bound {elapsed:.2f} s after the first create: "
          f"{args.pods / elapsed:.0f} pods bound/s")
    print(f"create-to-bound latency: p50 {pct(latency, .5):.0f} ms, "
          f"p99 {pct(latency, .99):.0f} ms, max {max(latency) * 1000:.0f} ms")
    print("CPU seconds during the run: " + ", ".join(f"{role} {sec:.2f}"
                                                     for role, sec in cpu.items()))
    print(f"Scheduled events written by then: {events} (the rest queued or dropped)")
    per_node = [nodes.get(f"node-{i:04d}", 0) for i in range(args.nodes)]
    print(f"pods per node: min {min(per_node)}, max {max(per_node)}, "
          f"nodes used {sum(1 for n in per_node if n)} of {args.nodes}")


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="atoll-bench-sched-")) / "data"
    port = free_port()
    base = [sys.executable, "-m", "atoll.cli.main", "--log-level", "WARNING"]
    server_profile = ["-m", "cProfile", "-o", args.profile_server] if args.profile_server else []
    server = subprocess.Popen([sys.executable, *server_profile, *base[1:], "server",
                               "--data-dir", str(data), "--port", str(port)])
    manager = None
    try:
        deadline = time.monotonic() + 60
        while not (data / "admin.kubeconfig").exists():
            assert time.monotonic() < deadline and server.poll() is None
            await asyncio.sleep(0.1)
        b = Bench(data, port)
        await b.wait_ready()
        profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        manager = subprocess.Popen([sys.executable, *profile, "-m", "atoll.cli.main",
                                    "--log-level", "WARNING", "controller-manager",
                                    "--kubeconfig", str(data / "admin.kubeconfig")])
        await run(args, b, {"api server": server.pid, "controller manager": manager.pid,
                            "this load generator": os.getpid()})
    finally:
        for proc in (manager, server):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--zones", type=int, default=10)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--no-owner", action="store_true", help="pods without a controlling owner")
    ap.add_argument("--profile", default="", help="cProfile the controller manager into FILE")
    ap.add_argument("--profile-server", default="", help="cProfile the API server into FILE")
    asyncio.run(main(ap.parse_args()))
