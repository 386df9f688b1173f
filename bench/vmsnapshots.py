"""Memory snapshots of a 256 MiB guest: Atoll's VirtualMachineSnapshot beside bare QEMU.

    .venv/bin/python bench/vmsnapshots.py [--rounds 5]

The baseline is bare `qemu-system-x86_64` running the tiny image (1 vCPU, 256 MiB, a blank
64M qcow2 disk) driven over QMP: `snapshot-save` and `snapshot-load` jobs, started → concluded.
Atoll's side runs `atoll up` on a scratch data dir, a VM of the same size from the tiny image
with the same disk (`atoll image build tiny --disk 64M`), and times, through the API:
create the VirtualMachineSnapshot (`memory: true`) → `VirtualMachineSnapshotReady`, and set
`spec.currentSnapshotName` → `VirtualMachineSnapshotRevertSucceeded` with the request cleared.
Both guests are idle at their shell prompt.  Under TCG here.
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
from qemu.qmp import EventListener, QMPClient  # noqa: E402

from atoll.agent.runtime import accel  # noqa: E402
from atoll.api.vmoperator import names as n  # noqa: E402
from atoll.api.vmoperator import snapshots as s  # noqa: E402
from atoll.client import kubeconfig  # noqa: E402
from atoll.client.rest import ApiClient  # noqa: E402
from atoll.vmimage.tiny import build_tiny  # noqa: E402
from bench._up import platform  # noqa: E402

NODE = "bench-snap-node"
BRIDGE = "atollb7"
READY = b"atoll-tiny: ready"


def ms(samples: list[float]) -> str:
    if not samples:
        return f"{'-':>8} {'-':>8}"
    return f"{statistics.median(samples) * 1000:8.0f} {max(samples) * 1000:8.0f}"


# -- the baseline: bare QEMU ---------------------------------------------------------------------
async def job(qmp: QMPClient, command: str, args: dict) -> float:
    listener = EventListener(("JOB_STATUS_CHANGE",))
    with qmp.listen(listener):
        started = time.monotonic()
        await qmp.execute(command, dict(args, **{"job-id": "j"}))
        async for event in listener:
            if event["data"].get("status") == "concluded":
                break
        took = time.monotonic() - started
    jobs = await qmp.execute("query-jobs")
    assert not any(j.get("error") for j in jobs), jobs
    await qmp.execute("job-dismiss", {"id": "j"})
    return took


async def bare(work: Path, kernel: Path, initrd: Path, rounds: int) -> tuple[list[float], ...]:
    disk, log, sock = work / "bare.qcow2", work / "bare.log", work / "bare.qmp"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "microvm,accel=tcg,acpi=on", "-cpu", "max",
         "-smp", "1", "-m", "256M", "-nodefaults", "-no-user-config", "-nographic",
         "-serial", f"file:{log}", "-kernel", str(kernel), "-initrd", str(initrd),
         "-append", f"console=ttyS0 panic=-1 quiet {accel.tcg_kernel_args()}",
         "-drive", f"id=disk0,file={disk},format=qcow2,if=none,node-name=boot",
         "-device", "virtio-blk-device,drive=disk0", "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saves, loads = [], []
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and READY in log.read_bytes()):
            assert time.monotonic() < deadline, "bare guest never got ready"
            await asyncio.sleep(0.05)
        qmp = QMPClient("bench")
        await qmp.connect(str(sock))
        for i in range(rounds):
            tag = f"t{i}"
            saves.append(await job(qmp, "snapshot-save",
                                   {"tag": tag, "vmstate": "boot", "devices": ["boot"]}))
            loads.append(await job(qmp, "snapshot-load",
                                   {"tag": tag, "vmstate": "boot", "devices": ["boot"]}))
            await job(qmp, "snapshot-delete", {"tag": tag, "devices": ["boot"]})
        await qmp.disconnect()
    finally:
        proc.kill()
        proc.wait()
    return saves, loads


# -- atoll --------------------------------------------------------------------------------------
async def wait_for(probe, timeout: float = 300):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == type_), {})


async def atoll(data: Path, image: str, rounds: int) -> tuple[list[float], list[float]]:
    client = ApiClient(kubeconfig.load(data / "admin.kubeconfig"), user_agent="bench-snap")
    ns = "bench-snap"
    try:
        await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        await client.create(f"/apis/{n.GROUP}/{n.VERSION}/namespaces/{ns}/virtualmachineclasses",
                            {"metadata": {"name": "snap-256"},
                             "spec": {"hardware": {"cpus": 1, "memory": "256Mi"}}})
        await client.create(n.vm_path(ns), {
            "apiVersion": n.API_VERSION, "kind": "VirtualMachine", "metadata": {"name": "g"},
            "spec": {"className": "snap-256", "imageName": image, "powerState": "PoweredOn"}})

        async def ready() -> bool:
            async with client.session.get(f"{n.vm_path(ns, 'g')}/console") as resp:
                return READY in await resp.read()
        await wait_for(ready)
        saves, loads = [], []
        for i in range(rounds):
            name = f"snap-{i}"
            started = time.monotonic()
            await client.create(s.path(ns), {"apiVersion": s.API_VERSION, "kind": s.KIND,
                                             "metadata": {"name": name},
                                             "spec": {"vmName": "g", "memory": True}})

            async def taken() -> bool:
                return condition(await client.get(s.path(ns, name)), s.READY).get(
                    "status") == "True"
            await wait_for(taken)
            saves.append(time.monotonic() - started)
            started = time.monotonic()
            await client.patch(s.vm_path(ns, "g"), {"spec": {"currentSnapshotName": name}})

            async def reverted() -> bool:
                vm = await client.get(s.vm_path(ns, "g"))
                return not vm["spec"].get("currentSnapshotName") and \
                    condition(vm, s.REVERT_SUCCEEDED).get("status") == "True"
            await wait_for(reverted)
            loads.append(time.monotonic() - started)
            await client.delete(s.path(ns, name))
        return saves, loads
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-snap-"))
    built = build_tiny(Path.home() / ".cache" / "atoll")
    assert built.kernel and built.initrd
    bare_save, bare_load = asyncio.run(bare(work, built.kernel, built.initrd, args.rounds))
    with platform(work, NODE, BRIDGE, "10.227.0.0/16") as (data, _port):
        kc = str(data / "admin.kubeconfig")
        subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "build", "tiny",
                        "--disk", "64M", "--name", "tiny-snap", "--kubeconfig", kc],
                       check=True, capture_output=True)
        out = subprocess.run(["kubectl", "--kubeconfig", kc, "get", "cvmi", "-o", "json"],
                             check=True, capture_output=True, text=True).stdout
        image = next(i["metadata"]["name"] for i in json.loads(out)["items"]
                     if (i.get("status") or {}).get("name") == "tiny-snap")
        saves, loads = asyncio.run(atoll(data, image, args.rounds))
    print(f"{'256 MiB guest, TCG':44} {'p50 ms':>8} {'max ms':>8}")
    for label, samples in (("bare QEMU snapshot-save job", bare_save),
                           ("bare QEMU snapshot-load job", bare_load),
                           ("atoll: create snapshot → Ready", saves),
                           ("atoll: currentSnapshotName → reverted", loads)):
        print(f"{label:44} {ms(samples)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
