"""Pod startup latency on one host, beside bare runc in the same run.

    .venv/bin/python bench/pods.py [--pods 100] [--rate 10]

Starts `atoll up` (API server, controllers, one agent) on a scratch data dir with its own
bridge and pod range, then measures create-to-Running latency as the Kubernetes pod startup
SLO defines it (request sent → the watch shows phase Running), for N pods created at once and
for N pods created at a steady rate. Pods name their node (`spec.nodeName`), so scheduling is
not part of the figure. The baseline is bare `runc create` + `runc start` of the same busybox
bundle, one at a time and N at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from atoll.agent.images.store import ImageStore  # noqa: E402
from atoll.agent.runtime import oci  # noqa: E402
from atoll.client import kubeconfig  # noqa: E402
from atoll.client.rest import ApiClient  # noqa: E402
from bench._up import platform  # noqa: E402

NODE = "bench-node"
BRIDGE = "atollb0"


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000 if s else float("nan")


# -- the baseline: bare runc ------------------------------------------------------------------------
def bare_runc(workdir: Path, count: int, concurrent: bool) -> list[float]:
    store = ImageStore(workdir / "images")
    image = store.ensure_busybox()
    assert image is not None
    root = workdir / "runc-root"
    root.mkdir(exist_ok=True)
    spec = oci.runtime_spec(oci.ContainerConfig(args=["sleep", "3600"], env=image.env,
                                                hostname="bare"))
    bundles = []
    for i in range(count):
        b = workdir / f"b{i}"
        for d in ("rootfs", "upper", "work"):
            (b / d).mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={image.layers[0]},upperdir={b / 'upper'},workdir={b / 'work'}",
                        str(b / "rootfs")], check=True)
        (b / "config.json").write_text(json.dumps(spec))
        bundles.append(b)

    def one(i: int) -> float:
        started = time.perf_counter()
        subprocess.run(["runc", "--root", str(root), "create", "--bundle", str(bundles[i]),
                        f"bare{i}"], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["runc", "--root", str(root), "start", f"bare{i}"], check=True)
        return time.perf_counter() - started

    try:
        if concurrent:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=count) as pool:
                t0 = time.perf_counter()
                futures = [pool.submit(lambda i=i: (time.perf_counter(), one(i)))
                           for i in range(count)]
                # latency counted from the moment all were asked for, as for the pods
                return [(f.result()[0] - t0) + f.result()[1] for f in futures]
        return [one(i) for i in range(count)]
    finally:
        for i in range(count):
            subprocess.run(["runc", "--root", str(root), "delete", "--force", f"bare{i}"],
                           capture_output=True)
        for b in bundles:
            subprocess.run(["umount", str(b / "rootfs")], capture_output=True)
            shutil.rmtree(b, ignore_errors=True)


# -- Atoll --------------------------------------------------------------------------------------------
def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": NODE, "restartPolicy": "Never",
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "busybox",
                                     "command": ["sleep", "3600"]}]}}


async def run_pods(client: ApiClient, ns: str, names: list[str], rate: float | None) -> list[float]:
    sent: dict[str, float] = {}
    running: dict[str, float] = {}
    listing = await client.get(f"/api/v1/namespaces/{ns}/pods")
    rv = listing["metadata"]["resourceVersion"]
    done = asyncio.Event()

    async def watch() -> None:
        async for ev in client.watch(f"/api/v1/namespaces/{ns}/pods", resource_version=rv,
                                     timeout_seconds=600):
            obj = ev.get("object") or {}
            name = (obj.get("metadata") or {}).get("name")
            if (obj.get("status") or {}).get("phase") == "Running" and name not in running:
                running[name] = time.perf_counter()
                if len(running) == len(names):
                    done.set()
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)

    async def create(name: str) -> None:
        sent[name] = time.perf_counter()
        await client.create(f"/api/v1/namespaces/{ns}/pods", pod(name))

    if rate is None:
        await asyncio.gather(*(create(n) for n in names))
    else:
        start = time.perf_counter()
        tasks = []
        for i, n in enumerate(names):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(create(n)))
        await asyncio.gather(*tasks)
    await asyncio.wait_for(done.wait(), 300)
    watcher.cancel()
    return [running[n] - sent[n] for n in names]


async def delete_all(client: ApiClient, ns: str) -> None:
    await client.delete(f"/api/v1/namespaces/{ns}/pods", gracePeriodSeconds=0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not (await client.get(f"/api/v1/namespaces/{ns}/pods"))["items"]:
            return
        await asyncio.sleep(0.5)


async def atoll(data: Path, port: int, count: int, rate: float) -> dict[str, list[float]]:
    client = ApiClient(kubeconfig.load(data / "admin.kubeconfig"))
    try:
        deadline = time.monotonic() + 60
        while True:  # the agent registers its Node just after the platform is ready
            try:
                await client.get(f"/api/v1/nodes/{NODE}")
                break
            except Exception:
                assert time.monotonic() < deadline, "the agent did not register its Node"
                await asyncio.sleep(0.2)
        await client.create("/api/v1/namespaces", {"metadata": {"name": "bench"}})
        out = {}
        out["at once"] = await run_pods(client, "bench", [f"a{i}" for i in range(count)], None)
        await delete_all(client, "bench")
        out[f"{rate:g}/s"] = await run_pods(client, "bench", [f"r{i}" for i in range(count)],
                                            rate)
        await delete_all(client, "bench")
        return out
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-pods-"))
    print("bare runc create+start, one at a time: ", end="", flush=True)
    seq = bare_runc(work / "bare1", min(args.pods, 30), concurrent=False)
    print(f"p50 {pct(seq, .5):.0f} ms, p99 {pct(seq, .99):.0f} ms")
    print(f"bare runc create+start, {args.pods} at once: ", end="", flush=True)
    par = bare_runc(work / "bare2", args.pods, concurrent=True)
    print(f"p50 {pct(par, .5):.0f} ms, p99 {pct(par, .99):.0f} ms")

    with platform(work, NODE, BRIDGE, "10.251.0.0/16") as (data, port):
        results = asyncio.run(atoll(data, port, args.pods, args.rate))
    print()
    print(f"{'create → Running':24} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    print(f"{'bare runc, sequential':24} {pct(seq, .5):8.0f} {pct(seq, .99):8.0f} "
          f"{statistics.mean(seq) * 1000:8.0f}")
    print(f"{'bare runc, all at once':24} {pct(par, .5):8.0f} {pct(par, .99):8.0f} "
          f"{statistics.mean(par) * 1000:8.0f}")
    for label, lat in results.items():
        print(f"{'atoll pods, ' + label:24} {pct(lat, .5):8.0f} {pct(lat, .99):8.0f} "
              f"{statistics.mean(lat) * 1000:8.0f}")
    shutil.copy(work / "up.log", Path(tempfile.gettempdir()) / "atoll-bench-pods-up.log")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
