"""An acknowledged write survives kill -9 of the API server at any moment."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import free_port


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    log = open(data_dir.parent / "server.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "atoll.cli.main", "server", "--data-dir",
                             str(data_dir), "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)


async def wait_ready(url: str, ctx_factory, proc: subprocess.Popen, timeout: float = 60) -> ssl.SSLContext:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            ctx = ctx_factory()
            async with aiohttp.ClientSession() as s:
                async with s.get(url + "/readyz", ssl=ctx) as r:
                    if r.status == 200:
                        return ctx
        except (OSError, aiohttp.ClientError, ssl.SSLError):
            pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise AssertionError("server not ready")


async def test_acknowledged_writes_survive_kill9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    url = f"https://127.0.0.1:{port}"

    def ctx_factory() -> ssl.SSLContext:
        pki = data / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        return ctx

    proc = start_server(data, port)
    try:
        ctx = await wait_ready(url, ctx_factory, proc)
        acked: list[str] = []
        stop = asyncio.Event()

        async def writer(session: aiohttp.ClientSession, wid: int) -> None:
            i = 0
            while not stop.is_set():
                name = f"w{wid}-{i}"
                i += 1
                body = orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": name}, "data": {"v": "x" * 200}})
                try:
                    async with session.post(f"{url}/api/v1/namespaces/default/configmaps",
                                            data=body, ssl=ctx,
                                            headers={"Content-Type": "application/json"}) as r:
                        if r.status == 201:
                            acked.append(name)
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    return

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            tasks = [asyncio.create_task(writer(session, w)) for w in range(16)]
            deadline = time.monotonic() + 60
            while len(acked) < 400 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert len(acked) >= 400
        proc = start_server(data, port)
        ctx = await wait_ready(url, ctx_factory, proc)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/api/v1/namespaces/default/configmaps", ssl=ctx) as r:
                assert r.status == 200
                listing = await r.json()
        stored = {i["metadata"]["name"]: i for i in listing["items"]}
        missing = [n for n in acked if n not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
        for item in stored.values():
            assert item["data"] == {"v": "x" * 200}
            assert int(item["metadata"]["resourceVersion"]) > 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
