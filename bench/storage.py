"""Storage: how soon a claim is Bound and its pod Running, and I/O on a claim from a pod beside
the same kind of file used straight on the host, in one run.

    ATOLL_TEST_SLOT=N .venv/bin/python bench/storage.py [--claims 20] [--seq-mib 256]

1. Latency (on `atoll up` with this session's slot bridge 3): N times, a claim of the default
   class (``atoll-local``, WaitForFirstConsumer) and a pod using it are created together; the
   times from the create request to the claim's ``Bound`` and to the pod's ``Running`` are
   taken from watches (so the scheduler, the provisioner, the binder, the host's ext4 image
   and its mount are all inside the figure).  Target: p99 < 2 s.
2. I/O: one program (``IO`` below: O_DIRECT, sequential 1 MiB writes then reads, then random
   4 KiB writes then reads over a 64 MiB file, each for a fixed amount of data) runs in a pod
   on a claim and on the host against a sparse ext4 image made and loop-mounted as the agent
   makes a Filesystem volume, interleaved host / pod / host / pod; the best of each is printed
   side by side.  The pod runs the host's own python3 (hostPath-mounted, in a namespace with
   the privileged Pod Security level) so both sides run byte-identical code (fio is not
   installed on these machines; the run says whether it found one).
3. Snapshots: a 1 GiB claim holds ``--snap-fill-mib`` of random data written by a pod; the
   time from a VolumeSnapshot's create to its ``readyToUse`` (watched), and from a claim
   restored from it (with a pod reading it) to the claim's ``Bound`` and the pod's
   ``Running`` (the host copies the snapshot into the new volume before the mount), each
   ``--snap-rounds`` times; beside them, in the same run, a bare ``cp --reflink=auto`` (what
   the host does, then an fsync) and ``cp --reflink=auto --sparse=always`` of the same
   volume file on the host.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from atoll.client import kubeconfig  # noqa: E402
from atoll.client.rest import ApiClient  # noqa: E402
from bench._up import platform  # noqa: E402
from tests.conftest import kubectl_binary, slot_bridge, slot_cidr  # noqa: E402

NODE = "bench-storage-node"
SLOT_N = 3
MIB = 1 << 20

#: the I/O program, run with the host's python3 on the host and inside the pod
IO = r"""
import json, mmap, os, random, sys, time
path, seq_mib = sys.argv[1], int(sys.argv[2])
flags = os.O_RDWR | os.O_CREAT | os.O_DIRECT
out = {}
def timed(fn):
    t = time.perf_counter(); n = fn(); return n / (time.perf_counter() - t)
buf = mmap.mmap(-1, 1 << 20); buf.write(os.urandom(1 << 20))
fd = os.open(path + ".seq", flags, 0o600)
def seq_write():
    for i in range(seq_mib): os.pwrite(fd, buf, i << 20)
    os.fsync(fd); return seq_mib
def seq_read():
    for i in range(seq_mib): os.preadv(fd, [buf], i << 20)
    return seq_mib
out["seq_write_mibs"] = timed(seq_write); out["seq_read_mibs"] = timed(seq_read)
os.close(fd); os.unlink(path + ".seq")
small = mmap.mmap(-1, 4096); small.write(os.urandom(4096))
fd = os.open(path + ".rand", flags, 0o600)
for i in range(64): os.pwrite(fd, buf, i << 20)
os.fsync(fd)
rng = random.Random(1); blocks = (64 << 20) // 4096; ops = 4096
offsets = [rng.randrange(blocks) * 4096 for _ in range(ops)]
def rand_write():
    for off in offsets: os.pwrite(fd, small, off)
    os.fsync(fd); return ops
def rand_read():
    for off in offsets: os.preadv(fd, [small], off)
    return ops
out["rand_write_iops"] = timed(rand_write); out["rand_read_iops"] = timed(rand_read)
os.close(fd); os.unlink(path + ".rand")
print("IO " + json.dumps(out))
"""


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- 1. claim → Bound, pod → Running ----------------------------------------------------------
def claim_body(name: str, size: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}}}


def pod_body(name: str, claim: str, command: list[str], host_python: bool = False
             ) -> dict[str, Any]:
    mounts = [{"name": "data", "mountPath": "/data"}]
    volumes: list[dict[str, Any]] = [{"name": "data",
                                      "persistentVolumeClaim": {"claimName": claim}}]
    if host_python:
        for i, path in enumerate(("/usr", "/lib", "/lib64", "/etc/ld.so.cache")):
            mounts.append({"name": f"h{i}", "mountPath": path, "readOnly": True})
            volumes.append({"name": f"h{i}", "hostPath": {"path": path}})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0, "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "busybox", "command": command,
                                     "volumeMounts": mounts}],
                     "volumes": volumes}}


async def first_times(client: ApiClient, path: str, done: Any, seen: dict[str, float],
                      ready: asyncio.Event) -> None:
    """Record when each object of the collection first satisfies ``done`` (by watch)."""
    listing = await client.get(path)
    rv = listing["metadata"]["resourceVersion"]
    ready.set()
    async for ev in client.watch(path, resource_version=rv):
        obj = ev.get("object") or {}
        name = (obj.get("metadata") or {}).get("name", "")
        if name and name not in seen and done(obj):
            seen[name] = time.monotonic()


async def latency(client: ApiClient, ns: str, count: int) -> tuple[list[float], list[float]]:
    bound: dict[str, float] = {}
    running: dict[str, float] = {}
    r1, r2 = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(first_times(
        client, f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
        lambda o: (o.get("status") or {}).get("phase") == "Bound", bound, r1)),
        asyncio.create_task(first_times(
            client, f"/api/v1/namespaces/{ns}/pods",
            lambda o: (o.get("status") or {}).get("phase") == "Running", running, r2))]
    await r1.wait()
    await r2.wait()
    to_bound, to_running = [], []
    try:
        for i in range(count):
            start = time.monotonic()
            await client.create(f"/api/v1/namespaces/{ns}/persistentvolumeclaims",
                                claim_body(f"c{i}", "16Mi"))
            await client.create(f"/api/v1/namespaces/{ns}/pods",
                                pod_body(f"p{i}", f"c{i}", ["sleep", "3600"]))
            deadline = start + 60
            while f"p{i}" not in running or f"c{i}" not in bound:
                assert time.monotonic() < deadline, f"pod p{i} never ran on its claim"
                await asyncio.sleep(0.005)
            to_bound.append(bound[f"c{i}"] - start)
            to_running.append(running[f"p{i}"] - start)
    finally:
        for t in tasks:
            t.cancel()
    return to_bound, to_running


# -- 3. snapshots -------------------------------------------------------------------------------
SNAP = "/apis/snapshot.storage.k8s.io/v1/namespaces/bench/volumesnapshots"


async def wait_first(client: ApiClient, path: str, name: str, done: Any,
                     start: float) -> float:
    """Seconds from ``start`` until object ``name`` of the collection satisfies ``done``."""
    listing = await client.get(path)
    for obj in listing.get("items") or []:
        if obj["metadata"]["name"] == name and done(obj):
            return time.monotonic() - start
    async for ev in client.watch(path, resource_version=listing["metadata"]["resourceVersion"]):
        obj = ev.get("object") or {}
        if (obj.get("metadata") or {}).get("name") == name and done(obj):
            return time.monotonic() - start
    raise AssertionError(f"the watch of {path} ended")


async def snapshots(client: ApiClient, data: Path, work: Path, fill_mib: int, rounds: int
                    ) -> dict[str, list[float]]:
    ns = "/api/v1/namespaces/bench"
    await client.create(f"{ns}/persistentvolumeclaims", claim_body("snapsrc", "1Gi"))
    await client.create(f"{ns}/pods", pod_body("filler", "snapsrc", [
        "sh", "-c", f"dd if=/dev/urandom of=/data/fill bs=1M count={fill_mib} && sync"]))
    await wait_first(client, f"{ns}/pods", "filler",
                     lambda o: (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
                     time.monotonic())
    filler = await client.get(f"{ns}/pods/filler")
    assert filler["status"]["phase"] == "Succeeded", "the pod filling the volume failed"
    src = await client.get(f"{ns}/persistentvolumeclaims/snapsrc")
    disk = data / "agent" / "volumes" / src["spec"]["volumeName"] / "disk.img"
    out: dict[str, list[float]] = {"snapshot ready": [], "restored claim Bound": [],
                                   "restored pod Running": [], "cp --reflink=auto": [],
                                   "  + fsync of the copy": [], "cp --sparse=always": []}
    ready = lambda o: (o.get("status") or {}).get("readyToUse") is True  # noqa: E731
    copies = [("cp --reflink=auto", ["--reflink=auto"]),
              ("cp --sparse=always", ["--reflink=auto", "--sparse=always"])]
    for r in range(rounds):
        with open(disk, "rb") as f:  # every copy (and the snapshot) reads a warm source
            while f.read(8 * MIB):
                pass
        for label, argv in copies if r % 2 == 0 else copies[::-1]:
            target = work / "copy.img"
            os.sync()  # nobody's dirty pages in the figure
            t = time.monotonic()
            subprocess.run(["cp", *argv, str(disk), str(target)], check=True)
            out[label].append(time.monotonic() - t)
            if len(argv) == 1:
                t = time.monotonic()
                fd = os.open(target, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
                out["  + fsync of the copy"].append(time.monotonic() - t)
            target.unlink()
        os.sync()
        start = time.monotonic()
        await client.create(SNAP, {"apiVersion": "snapshot.storage.k8s.io/v1",
                                   "kind": "VolumeSnapshot", "metadata": {"name": f"s{r}"},
                                   "spec": {"source": {"persistentVolumeClaimName": "snapsrc"}}})
        out["snapshot ready"].append(await wait_first(client, SNAP, f"s{r}", ready, start))
        body = claim_body(f"r{r}", "1Gi")
        body["spec"]["dataSource"] = {"apiGroup": "snapshot.storage.k8s.io",
                                      "kind": "VolumeSnapshot", "name": f"s{r}"}
        os.sync()
        start = time.monotonic()
        bound = asyncio.create_task(wait_first(
            client, f"{ns}/persistentvolumeclaims", f"r{r}",
            lambda o: (o.get("status") or {}).get("phase") == "Bound", start))
        await client.create(f"{ns}/persistentvolumeclaims", body)
        await client.create(f"{ns}/pods", pod_body(f"reader{r}", f"r{r}", ["sleep", "3600"]))
        out["restored pod Running"].append(await wait_first(
            client, f"{ns}/pods", f"reader{r}",
            lambda o: (o.get("status") or {}).get("phase") == "Running", start))
        out["restored claim Bound"].append(await bound)
    return out


# -- 2. I/O ------------------------------------------------------------------------------------
def parse_io(text: str) -> dict[str, float]:
    for line in text.splitlines():
        if "IO {" in line:
            return json.loads(line[line.index("IO {") + 3:])
    raise AssertionError(f"no result in:\n{text[-2000:]}")


def host_io(work: Path, size_mib: int, seq_mib: int) -> dict[str, float]:
    """The same program on the host, on a sparse ext4 image loop-mounted as the agent does
    (made once and kept across rounds, as the claim is)."""
    img, mnt = work / "host.img", work / "host-mnt"
    mnt.mkdir(exist_ok=True)
    if not img.exists():
        with open(img, "wb") as f:
            f.truncate(size_mib * MIB)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)], check=True)
    subprocess.run(["mount", "-t", "ext4", "-o", "loop,discard", str(img), str(mnt)], check=True)
    try:
        out = subprocess.run(["/usr/bin/python3", "-c", IO, str(mnt / "f"), str(seq_mib)],
                             capture_output=True, text=True, timeout=600, check=True).stdout
        return parse_io(out)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def pod_io(kubectl: list[str], ns: str, name: str, claim: str, seq_mib: int) -> dict[str, float]:
    body = pod_body(name, claim, ["/usr/bin/python3", "-c", IO, "/data/f", str(seq_mib)],
                    host_python=True)
    subprocess.run([*kubectl, "-n", ns, "apply", "-f", "-"], input=json.dumps(body),
                   text=True, check=True, capture_output=True)
    deadline = time.monotonic() + 600
    while True:
        phase = subprocess.run([*kubectl, "-n", ns, "get", "pod", name, "-o",
                                "jsonpath={.status.phase}"], capture_output=True,
                               text=True).stdout
        if phase in ("Succeeded", "Failed"):
            break
        assert time.monotonic() < deadline, f"the I/O pod {name} did not finish"
        time.sleep(0.5)
    logs = subprocess.run([*kubectl, "-n", ns, "logs", name], capture_output=True,
                          text=True).stdout
    subprocess.run([*kubectl, "-n", ns, "delete", "pod", name, "--wait=true"],
                   capture_output=True)
    assert phase == "Succeeded", logs
    return parse_io(logs)


async def setup(data: Path, count: int) -> tuple[list[float], list[float]]:
    client = ApiClient(kubeconfig.load(data / "admin.kubeconfig"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                node = await client.get(f"/api/v1/nodes/{NODE}")
                if any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in (node.get("status") or {}).get("conditions") or []):
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "the agent did not become Ready"
            await asyncio.sleep(0.2)
        await client.create("/api/v1/namespaces", {"metadata": {
            "name": "bench", "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}})
        await asyncio.sleep(1.0)  # the namespace's service account and CA appear
        return await latency(client, "bench", count)
    finally:
        await client.close()


async def snapshot_run(data: Path, work: Path, fill_mib: int, rounds: int
                       ) -> dict[str, list[float]]:
    client = ApiClient(kubeconfig.load(data / "admin.kubeconfig"))
    try:
        return await snapshots(client, data, work, fill_mib, rounds)
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", type=int, default=20)
    ap.add_argument("--seq-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--snap-fill-mib", type=int, default=256)
    ap.add_argument("--snap-rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-storage-"))
    size_mib = args.seq_mib + 128
    fio = shutil.which("fio")
    print(f"load {load()}; fio: {fio or 'not installed (the python O_DIRECT program is used)'}")
    host: list[dict[str, float]] = []
    pod: list[dict[str, float]] = []
    with platform(work, NODE, slot_bridge(SLOT_N), slot_cidr(SLOT_N)) as (data, port):
        to_bound, to_running = asyncio.run(setup(data, args.claims))
        snaps = asyncio.run(snapshot_run(data, work, args.snap_fill_mib, args.snap_rounds))
        kubectl = [kubectl_binary(), "--kubeconfig", str(data / "admin.kubeconfig")]
        subprocess.run([*kubectl, "-n", "bench", "apply", "-f", "-"], check=True, text=True,
                       capture_output=True,
                       input=json.dumps(claim_body("io", f"{size_mib}Mi")))
        for r in range(args.rounds):
            host.append(host_io(work, size_mib, args.seq_mib))
            pod.append(pod_io(kubectl, "bench", f"io{r}", "io", args.seq_mib))
    print()
    print(f"{'claim+pod created →':24} {'p50':>8} {'p99':>8} {'mean':>8}   (n={args.claims})")
    for label, xs in (("claim Bound", to_bound), ("pod Running", to_running)):
        print(f"{label:24} {pct(xs, .5) * 1000:6.0f}ms {pct(xs, .99) * 1000:6.0f}ms "
              f"{statistics.mean(xs) * 1000:6.0f}ms")
    print()
    print(f"{'I/O (best of ' + str(args.rounds) + ')':24} {'host':>12} {'pod on claim':>14} "
          f"{'pod/host':>9}")
    for key, unit in (("seq_write_mibs", "MiB/s"), ("seq_read_mibs", "MiB/s"),
                      ("rand_write_iops", "IOPS"), ("rand_read_iops", "IOPS")):
        h, p = max(x[key] for x in host), max(x[key] for x in pod)
        label = {"seq_write_mibs": "seq 1 MiB write", "seq_read_mibs": "seq 1 MiB read",
                 "rand_write_iops": "random 4 KiB write", "rand_read_iops": "random 4 KiB read"
                 }[key]
        print(f"{label:24} {h:7.0f} {unit:5} {p:8.0f} {unit:5} {p / h * 100:8.0f}%")
    print()
    print(f"{'1 GiB volume, ' + str(args.snap_fill_mib) + ' MiB data':28} {'median':>8} "
          f"{'min':>8} {'max':>8}   (n={args.snap_rounds})")
    for label, xs in snaps.items():
        print(f"{label:28} {statistics.median(xs) * 1000:6.0f}ms {min(xs) * 1000:6.0f}ms "
              f"{max(xs) * 1000:6.0f}ms")
    print(f"load {load()}")
    shutil.copy(work / "up.log", Path(tempfile.gettempdir()) / "atoll-bench-storage-up.log")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
