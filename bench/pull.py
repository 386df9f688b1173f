"""Image pulls from a loopback registry, beside `skopeo copy` of the same image in the same run.

    .venv/bin/python bench/pull.py [--mb 50] [--layers 10] [--runs 3] [--pods 20]

Builds an image of N layers (busybox in the first, random bytes in all, so ~MB of gzip
that does not shrink), pushes it with skopeo to Debian's docker-registry on a loopback
port, then measures, each on a fresh store or directory:

- the agent's puller alone (manifest, blobs verified, layers unpacked into the store);
- `skopeo copy docker://... dir:` of the same image (download and verify, no unpacking);
- a pod of that image on `atoll up`: create → Running (pull + container start);
- P pods of a second image of the same shape created at once: time until all run, and how
  many times the registry served each of its layers (one pull for all is the target).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from atoll.agent.images.puller import ImagePuller  # noqa: E402
from atoll.agent.images.store import ImageStore  # noqa: E402
from atoll.client import kubeconfig  # noqa: E402
from atoll.client.rest import ApiClient  # noqa: E402
from bench._up import platform  # noqa: E402
from tests import ociregistry  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.imagebuild import layer_tar  # noqa: E402

NODE = "bench-pull-node"
BRIDGE = "atollbp0"
POD_CIDR = "10.240.0.0/16"


def build(layout: ociregistry.Layout, tag: str, mb: int, layers: int) -> list[str]:
    """An image of ``layers`` layers adding up to about ``mb`` MB; its layer digests."""
    per = (mb << 20) // layers
    tars = []
    for i in range(layers):
        files = {f"data/{tag}-{i}": os.urandom(per)}
        tars.append(layer_tar(files) if i else _with_busybox(files))
    desc = layout.image(tars, {"Cmd": ["/bin/sh", "-c", "exec busybox sleep 3600"],
                               "Env": ["PATH=/bin"]}, level=1)
    layout.name(desc, tag)
    manifest = json.loads((layout.root / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
    return [d["digest"] for d in manifest["layers"]]


def _with_busybox(files: dict[str, bytes]) -> bytes:
    base = Path("/bin/busybox").read_bytes()
    return layer_tar({"bin/busybox": base, **files},
                     symlinks={"bin/sh": "busybox"}, dirs=("bin", "data", "tmp"))


def time_puller(ref: str, work: Path) -> float:
    store = ImageStore(work)

    async def go() -> float:
        puller = ImagePuller(store)
        try:
            t = time.perf_counter()
            await puller.pull(ref)
            return time.perf_counter() - t
        finally:
            await puller.close()
    try:
        return asyncio.run(go())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def time_skopeo(ref: str, work: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                    f"dir:{work}"], check=True, capture_output=True,
                   env=dict(os.environ, HOME=str(work.parent)))
    elapsed = time.perf_counter() - t
    shutil.rmtree(work, ignore_errors=True)
    return elapsed


def pod(name: str, image: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": NODE, "restartPolicy": "Never",
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": image,
                                     "imagePullPolicy": "IfNotPresent"}]}}


async def pods_running(data: Path, image: str, names: list[str]) -> list[float]:
    """Seconds from create to Running of each pod, all created at once."""
    client = ApiClient(kubeconfig.load(data / "admin.kubeconfig"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                await client.get(f"/api/v1/nodes/{NODE}")
                break
            except Exception:
                assert time.monotonic() < deadline, "the agent did not register its Node"
                await asyncio.sleep(0.2)
        try:
            await client.create("/api/v1/namespaces", {"metadata": {"name": "bench"}})
        except Exception:
            pass
        listing = await client.get("/api/v1/namespaces/bench/pods")
        rv = listing["metadata"]["resourceVersion"]
        sent: dict[str, float] = {}
        running: dict[str, float] = {}
        done = asyncio.Event()

        async def watch() -> None:
            async for ev in client.watch("/api/v1/namespaces/bench/pods", resource_version=rv,
                                         timeout_seconds=600):
                obj = ev.get("object") or {}
                name = (obj.get("metadata") or {}).get("name")
                if name in sent and (obj.get("status") or {}).get("phase") == "Running" \
                        and name not in running:
                    running[name] = time.perf_counter()
                    if len(running) == len(names):
                        done.set()
                        return
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)

        async def create(name: str) -> None:
            sent[name] = time.perf_counter()
            await client.create("/api/v1/namespaces/bench/pods", pod(name, image))
        await asyncio.gather(*(create(n) for n in names))
        await asyncio.wait_for(done.wait(), 600)
        watcher.cancel()
        return [running[n] - sent[n] for n in names]
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pods", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-pull-"))
    reg = ociregistry.start(work / "registry", free_port())
    try:
        layout = ociregistry.Layout(work / "oci")
        print(f"building two {args.mb} MB, {args.layers}-layer images ...", flush=True)
        build(layout, "one", args.mb, args.layers)
        many_layers = build(layout, "many", args.mb, args.layers)
        reg.push(layout.root, "one", "bench/one:1")
        reg.push(layout.root, "many", "bench/many:1")
        ref = f"{reg.host}/bench/one:1"
        ours, theirs = [], []
        for i in range(args.runs):  # alternated, so both see the same machine state
            theirs.append(time_skopeo(ref, work / f"skopeo{i}"))
            ours.append(time_puller(ref, work / f"store{i}"))
        with platform(work, NODE, BRIDGE, POD_CIDR) as (data, _):
            one = asyncio.run(pods_running(data, ref, ["single"]))[0]
            many = asyncio.run(pods_running(data, f"{reg.host}/bench/many:1",
                                            [f"p{i}" for i in range(args.pods)]))
        served = [reg.blob_gets(d) for d in many_layers]
        med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
        print()
        print(f"{'image pull, ' + str(args.mb) + ' MB / ' + str(args.layers) + ' layers':44} "
              f"{'median s':>9} {'min s':>7} {'max s':>7}")
        print(f"{'skopeo copy docker:// → dir: (baseline)':44} {med_theirs:9.2f} "
              f"{min(theirs):7.2f} {max(theirs):7.2f}")
        print(f"{'atoll puller (download, verify, unpack)':44} {med_ours:9.2f} "
              f"{min(ours):7.2f} {max(ours):7.2f}")
        print(f"{'  ratio to skopeo':44} {med_ours / med_theirs:9.2f}")
        print(f"{'atoll pod create → Running (pull + start)':44} {one:9.2f}")
        print(f"{f'{args.pods} pods of one new image at once: all Running':44} "
              f"{statistics.median(many):9.2f} {min(many):7.2f} {max(many):7.2f}")
        print(f"{'  times the registry served each layer':44} "
              f"{'max ' + str(max(served)):>9}")
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
