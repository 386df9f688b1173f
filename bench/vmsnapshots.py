"""Memory snapshots of 256 MiB, 1 GiB and 4 GiB guests: Atoll's VirtualMachineSnapshot beside
bare QEMU.

    .venv/bin/python bench/vmsnapshots.py [--rounds 5] [--memory 256,1024,4096]

The baseline is bare `qemu-system-x86_64` running the tiny image (1 vCPU, the size, a blank
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


async def bare(work: Path, kernel: Path, initrd: Path, rounds: int, mib: int
               ) -> tuple[list[float], ...]:
    disk, log, sock = (work / f"bare-{mib}.{ext}" for ext in ("qcow2", "log", "qmp"))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "microvm,accel=tcg,acpi=on", "-cpu", "max",
         "-smp", "1", "-m", f"{mib}M", "-nodefaults", "-no-user-config", "-nographic",
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


async def atoll(data: Path, image: str, rounds: int, sizes: list[int]
                ) -> dict[int, tuple[list[float], list[float]]]:
    client = ApiClient(kubeconfig.load(data / "admin.kubeconfig"), user_agent="bench-snap")
    ns = "bench-snap"
    out: dict[int, tuple[list[float], list[float]]] = {}
    try:
        await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        for mib in sizes:
            out[mib] = await _atoll_size(client, ns, image, rounds, mib)
        return out
    finally:
        await client.close()


async def _atoll_size(client: ApiClient, ns: str, image: str, rounds: int, mib: int
                      ) -> tuple[list[float], list[float]]:
    vm = f"g-{mib}"
    await client.create(f"/apis/{n.GROUP}/{n.VERSION}/namespaces/{ns}/virtualmachineclasses",
                        {"metadata": {"name": f"snap-{mib}"},
                         "spec": {"hardware": {"cpus": 1, "memory": f"{mib}Mi"}}})
    await client.create(n.vm_path(ns), {
        "apiVersion": n.API_VERSION, "kind": "VirtualMachine", "metadata": {"name": vm},
        "spec": {"className": f"snap-{mib}", "imageName": image, "powerState": "PoweredOn"}})

    async def ready() -> bool:
        async with client.session.get(f"{n.vm_path(ns, vm)}/console") as resp:
            return READY in await resp.read()
    await wait_for(ready)
    saves, loads = [], []
    for i in range(rounds):
        name = f"snap-{mib}-{i}"
        started = time.monotonic()
        await client.create(s.path(ns), {"apiVersion": s.API_VERSION, "kind": s.KIND,
                                         "metadata": {"name": name},
                                         "spec": {"vmName": vm, "memory": True}})

        async def taken() -> bool:
            return condition(await client.get(s.path(ns, name)), s.READY).get(
                "status") == "True"
        await wait_for(taken)
        saves.append(time.monotonic() - started)
        started = time.monotonic()
        await client.patch(s.vm_path(ns, vm), {"spec": {"currentSnapshotName": name}})

        async def reverted() -> bool:
            got = await client.get(s.vm_path(ns, vm))
            return not got["spec"].get("currentSnapshotName") and \
                condition(got, s.REVERT_SUCCEEDED).get("status") == "True"
        await wait_for(reverted)
        loads.append(time.monotonic() - started)
        await client.delete(s.path(ns, name))
    await client.delete(n.vm_path(ns, vm))

    async def gone() -> bool:
        try:
            await client.get(n.vm_path(ns, vm))
        except Exception:  # noqa: BLE001 (NotFound: the QEMU is gone with it)
            return True
        return False
    await wait_for(gone)
    return saves, loads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory", default="256,1024,4096", help="guest sizes in MiB")
    args = ap.parse_args()
    sizes = [int(x) for x in args.memory.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-snap-"))
    built = build_tiny(Path.home() / ".cache" / "atoll")
    assert built.kernel and built.initrd
    baseline = {mib: asyncio.run(bare(work, built.kernel, built.initrd, args.rounds, mib))
                for mib in sizes}
    with platform(work, NODE, BRIDGE, "10.227.0.0/16") as (data, _port):
        kc = str(data / "admin.kubeconfig")
        subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "build", "tiny",
                        "--disk", "64M", "--name", "tiny-snap", "--kubeconfig", kc],
                       check=True, capture_output=True)
        out = subprocess.run(["kubectl", "--kubeconfig", kc, "get", "cvmi", "-o", "json"],
                             check=True, capture_output=True, text=True).stdout
        image = next(i["metadata"]["name"] for i in json.loads(out)["items"]
                     if (i.get("status") or {}).get("name") == "tiny-snap")
        measured = asyncio.run(atoll(data, image, args.rounds, sizes))
    print(f"{'memory snapshots, TCG (' + str(args.rounds) + ' rounds)':52} {'p50 ms':>8} "
          f"{'max ms':>8}")
    for mib in sizes:
        (bare_save, bare_load), (saves, loads) = baseline[mib], measured[mib]
        for label, samples in ((f"{mib} MiB: bare QEMU snapshot-save job", bare_save),
                               (f"{mib} MiB: atoll create snapshot → Ready", saves),
                               (f"{mib} MiB: bare QEMU snapshot-load job", bare_load),
                               (f"{mib} MiB: atoll currentSnapshotName → reverted", loads)):
            print(f"{label:52} {ms(samples)}")
        save = statistics.median(saves) / statistics.median(bare_save)
        load = statistics.median(loads) / statistics.median(bare_load)
        print(f"{mib} MiB: atoll / bare (p50): save {save:.2f}x, load {load:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
