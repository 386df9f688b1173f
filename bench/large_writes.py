"""Large writes beside /readyz: two clients create 575 KiB ConfigMaps (40,000 keys) for 10 s
while a probe asks /readyz every 20 ms; prints the probe's p50/p99/max and the answers.

    .venv/bin/python bench/large_writes.py
"""
import asyncio
import json
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import free_port

async def main():
    data = Path(tempfile.mkdtemp()) / "data"; port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli.main", "--log-level", "WARNING", "server",
                             "--data-dir", str(data), "--port", str(port)])
    while not (data / "admin.kubeconfig").exists(): await asyncio.sleep(0.1)
    ctx = ssl.create_default_context(cafile=str(data / "pki/ca.crt"))
    ctx.load_cert_chain(data / "pki/admin.crt", data / "pki/admin.key")
    url = f"https://127.0.0.1:{port}"
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        while True:
            try:
                async with s.get("/readyz") as r:
                    if r.status == 200: break
            except aiohttp.ClientError: pass
            await asyncio.sleep(0.1)
        body = json.dumps({"metadata": {"generateName": "big-"}, "data": {f"k{j}": "v" for j in range(40000)}}).encode()
        stop = time.monotonic() + 10; codes = {}
        async def writer():
            while time.monotonic() < stop:
                async with s.post("/api/v1/namespaces/default/configmaps", data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read(); codes[r.status] = codes.get(r.status, 0) + 1
        samples = []
        async def probe():
            async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=ctx)) as p:
                while time.monotonic() < stop:
                    t = time.perf_counter()
                    async with p.get("/readyz") as r: await r.read()
                    samples.append(time.perf_counter() - t); await asyncio.sleep(0.02)
        await asyncio.gather(probe(), *(writer() for _ in range(2)))
    proc.terminate(); proc.wait()
    samples.sort()
    print(f"body {len(body)//1024} KiB; writes {codes}; /readyz p50 {samples[len(samples)//2]*1000:.1f} ms, "
          f"p99 {samples[int(len(samples)*.99)]*1000:.1f} ms, max {samples[-1]*1000:.1f} ms, n={len(samples)}")
asyncio.run(main())
