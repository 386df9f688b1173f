"""API server benchmark: creates/s, gets/s, big lists and watch latency, beside raw SQLite.

    .venv/bin/python bench/api.py [--seconds 5] [--clients 1,8,32,64] [--watchers 1000]

Starts `atoll server` in its own process on a scratch data dir (the client runs in this process,
so on a 2-core machine each side has one core), then prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._up import api_server  # noqa: E402

PAYLOAD = {"v": "x" * 512}


def pct(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000


def raw_sqlite(n: int, batch: int) -> float:
    """The same writes straight into SQLite (WAL, synchronous=FULL), one thread."""
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(os.path.join(d, "raw.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, rev INTEGER, value BLOB)")
        body = orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "x", "namespace": "bench"}, "data": PAYLOAD})
        started = time.perf_counter()
        for i in range(0, n, batch):
            db.execute("BEGIN")
            for j in range(i, min(n, i + batch)):
                db.execute("INSERT INTO kv VALUES (?, ?, ?)", (f"/registry/cm/bench/{j}", j, body))
            db.execute("COMMIT")
        elapsed = time.perf_counter() - started
        db.close()
        return n / elapsed


class Bench:
    def __init__(self, data: Path, port: int) -> None:
        self.url = f"https://127.0.0.1:{port}"
        pki = data / "pki"
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        self.counter = 0

    def session(self, limit: int = 100) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ctx, limit=limit),
                                     timeout=aiohttp.ClientTimeout(total=60))

    async def create(self, s: aiohttp.ClientSession, ns: str) -> float:
        self.counter += 1
        body = orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": f"c{self.counter}"}, "data": PAYLOAD})
        t = time.perf_counter()
        async with s.post(f"{self.url}/api/v1/namespaces/{ns}/configmaps", data=body,
                          headers={"Content-Type": "application/json"}) as r:
            await r.read()
            assert r.status == 201, r.status
        return time.perf_counter() - t

    async def get(self, s: aiohttp.ClientSession, ns: str, name: str) -> float:
        t = time.perf_counter()
        async with s.get(f"{self.url}/api/v1/namespaces/{ns}/configmaps/{name}") as r:
            await r.read()
            assert r.status == 200, r.status
        return time.perf_counter() - t

    async def run_for(self, seconds: float, clients: int, op) -> tuple[float, list[float]]:
        lat: list[float] = []
        stop = time.perf_counter() + seconds
        async with self.session(limit=clients) as s:
            async def worker() -> None:
                while time.perf_counter() < stop:
                    lat.append(await op(s))
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            elapsed = time.perf_counter() - started
        return len(lat) / elapsed, lat

    async def ensure_ns(self, ns: str) -> None:
        async with self.session() as s:
            async with s.post(f"{self.url}/api/v1/namespaces",
                              data=orjson.dumps({"metadata": {"name": ns}}),
                              headers={"Content-Type": "application/json"}) as r:
                await r.read()

    async def fill(self, ns: str, n: int) -> None:
        await self.ensure_ns(ns)
        async with self.session(limit=32) as s:
            sem = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                async with sem:
                    body = orjson.dumps({"metadata": {"name": f"o{i}"}, "data": PAYLOAD})
                    async with s.post(f"{self.url}/api/v1/namespaces/{ns}/configmaps", data=body,
                                      headers={"Content-Type": "application/json"}) as r:
                        await r.read()
            await asyncio.gather(*(one(i) for i in range(n)))

    async def list_time(self, ns: str, limit: int = 0) -> float:
        async with self.session() as s:
            t = time.perf_counter()
            cont = ""
            total = 0
            while True:
                params = {"limit": str(limit)} if limit else {}
                if cont:
                    params["continue"] = cont
                async with s.get(f"{self.url}/api/v1/namespaces/{ns}/configmaps",
                                 params=params) as r:
                    body = orjson.loads(await r.read())
                total += len(body["items"])
                cont = body["metadata"].get("continue", "")
                if not cont:
                    break
            assert total >= 10000, total
            return time.perf_counter() - t

    async def watch_latency(self, watchers: int, events: int) -> list[float]:
        ns = "watchbench"
        await self.ensure_ns(ns)
        sent: dict[str, float] = {}
        lat: list[float] = []
        ready = 0
        all_ready = asyncio.Event()
        async with self.session(limit=watchers + 10) as s:
            async def watcher() -> None:
                nonlocal ready
                async with s.get(f"{self.url}/api/v1/namespaces/{ns}/configmaps",
                                 params={"watch": "true", "resourceVersion": "0",
                                         "timeoutSeconds": "300"},
                                 timeout=aiohttp.ClientTimeout(total=None)) as r:
                    ready += 1
                    if ready == watchers:
                        all_ready.set()
                    got = 0
                    async for line in r.content:
                        ev = orjson.loads(line)
                        name = ev["object"]["metadata"]["name"]
                        if name in sent:
                            lat.append(time.perf_counter() - sent[name])
                            got += 1
                            if got == events:
                                return
            tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
            await asyncio.wait_for(all_ready.wait(), 120)
            await asyncio.sleep(0.5)
            for i in range(events):
                name = f"e{i}"
                sent[name] = time.perf_counter()
                body = orjson.dumps({"metadata": {"name": name}, "data": {"a": "b"}})
                async with s.post(f"{self.url}/api/v1/namespaces/{ns}/configmaps", data=body,
                                   headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                await asyncio.sleep(0.05)
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
        return lat


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="atoll-bench-")) / "data"
    with api_server(data) as port:
        b = Bench(data, port)
        print(f"raw SQLite inserts/s (one commit each, WAL+FULL): {raw_sqlite(2000, 1):8.0f}")
        print(f"raw SQLite inserts/s (100 per commit):             {raw_sqlite(20000, 100):8.0f}")
        print()
        print(f"{'clients':>7} {'creates/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'gets/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
        await b.ensure_ns("bench")
        for c in args.clients:
            rate_c, lat_c = await b.run_for(args.seconds, c, lambda s: b.create(s, "bench"))
            rate_g, lat_g = await b.run_for(args.seconds, c, lambda s: b.get(s, "bench", "c1"))
            print(f"{c:7d} {rate_c:10.0f} {pct(lat_c, .5):7.1f} {pct(lat_c, .99):7.1f} "
                  f"{rate_g:9.0f} {pct(lat_g, .5):7.1f} {pct(lat_g, .99):7.1f}")
        await b.fill("big", 10000)
        full = await b.list_time("big")
        paged = await b.list_time("big", 500)
        print(f"\nlist of 10,000 objects: {full * 1000:.0f} ms in one response, "
              f"{paged * 1000:.0f} ms in pages of 500")
        lat = await b.watch_latency(args.watchers, args.events)
        print(f"watch delivery, {args.watchers} watchers x {args.events} events: "
              f"p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms, "
              f"mean {statistics.mean(lat) * 1000:.1f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                    default=[1, 8, 32, 64])
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--events", type=int, default=100)
    asyncio.run(main(ap.parse_args()))
