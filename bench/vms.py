"""VM start-up on one host, beside bare QEMU booting the same image in the same run.

    .venv/bin/python bench/vms.py [--vms 5] [--together 4]

Builds the tiny image (cached), starts `atoll up` on a scratch data dir with its own bridge,
publishes the image, then measures for VirtualMachines created one after another:
create → `status.powerState: PoweredOn` (placement, image fetch, seed, tap, QEMU running), and
create → the guest's "atoll-tiny: ready" on the serial console (cloud-init done), and the same
for N VMs created together. The baseline is bare `qemu-system-x86_64` with the same kernel,
initramfs, machine and kernel arguments, started → "ready" on its serial port. Under TCG here;
on a host where KVM works, both sides use it.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from atoll.agent.runtime import accel  # noqa: E402
from atoll.api.vmoperator import names as n  # noqa: E402
from atoll.client import kubeconfig  # noqa: E402
from atoll.client.rest import ApiClient  # noqa: E402
from atoll.vmimage.seed import make_seed  # noqa: E402
from atoll.vmimage.tiny import build_tiny  # noqa: E402
from bench._up import platform  # noqa: E402

NODE = "bench-vm-node"
BRIDGE = "atollb5"
READY = b"atoll-tiny: ready"


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000 if s else float("nan")


# -- the baseline: bare QEMU -----------------------------------------------------------------------
def bare_qemu(work: Path, kernel: Path, initrd: Path, count: int) -> list[float]:
    """Seconds from exec to "ready" on the serial port, ``count`` guests started together."""
    procs, started = [], []
    args = f"console=ttyS0 panic=-1 quiet {accel.tcg_kernel_args()}"
    for i in range(count):
        log = work / f"bare{i}.log"
        log.unlink(missing_ok=True)
        seed = work / f"seed{i}.iso"  # the same cloud-init seed disk the agent gives a VM
        make_seed(seed, f"bare-{i}", f"bare-{i}", "#cloud-config\nruncmd:\n- 'true'\n")
        started.append(time.monotonic())
        procs.append((subprocess.Popen(
            ["qemu-system-x86_64", "-machine", "microvm,accel=tcg,acpi=on", "-cpu", "max",
             "-smp", "2", "-m", "2048M", "-nodefaults", "-no-user-config", "-nographic",
             "-serial", f"file:{log}", "-kernel", str(kernel), "-initrd", str(initrd),
             "-append", args, "-drive", f"id=seed,file={seed},format=raw,if=none,readonly=on",
             "-device", "virtio-blk-device,drive=seed"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL), log))
    out = [0.0] * count
    pending = set(range(count))
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            if procs[i][1].exists() and READY in procs[i][1].read_bytes():
                out[i] = time.monotonic() - started[i]
                pending.discard(i)
        time.sleep(0.02)
    for p, _ in procs:
        p.kill()
        p.wait()
    if pending:
        print(f"bare QEMU: {len(pending)} of {count} guests not ready after 120 s (hung boot)")
    return [x for i, x in enumerate(out) if i not in pending]


# -- atoll --------------------------------------------------------------------------------------------
def vm(name: str) -> dict:
    return {"apiVersion": n.API_VERSION, "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {"className": "best-effort-xsmall", "imageName": "tiny",
                     "powerState": "PoweredOn",
                     "bootstrap": {"cloudInit": {"cloudConfig": {"runcmd": ["true"]}}}}}


async def run_vms(client: ApiClient, ns: str, names: list[str]) -> tuple[list[float], list[float]]:
    """(create → PoweredOn, create → guest ready) for VMs created together."""
    started: dict[str, float] = {}
    on: dict[str, float] = {}
    ready: dict[str, float] = {}

    async def one(name: str) -> None:
        started[name] = time.monotonic()
        await client.create(n.vm_path(ns), vm(name))
        while name not in ready:
            obj = await client.get(n.vm_path(ns, name))
            if name not in on and (obj.get("status") or {}).get("powerState") == "PoweredOn":
                on[name] = time.monotonic() - started[name]
            if name in on:
                async with client.session.get(f"{n.vm_path(ns, name)}/console") as resp:
                    if READY in await resp.read():
                        ready[name] = time.monotonic() - started[name]
            await asyncio.sleep(0.05)

    await asyncio.wait_for(asyncio.gather(*(one(x) for x in names)), 300)
    return list(on.values()), list(ready.values())


async def atoll(data: Path, vms: int, together: int) -> dict[str, tuple[list[float], list[float]]]:
    client = ApiClient(kubeconfig.load(data / "admin.kubeconfig"), user_agent="bench-vms")
    try:
        out = {}
        for label, batch, rounds in (("one at a time", 1, vms), (f"{together} together",
                                                                  together, 1)):
            ns = f"bench-{batch}"
            await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
            while True:  # the default classes arrive with the namespace
                try:
                    await client.get(n.class_path(ns, "best-effort-xsmall"))
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            on_all: list[float] = []
            ready_all: list[float] = []
            for r in range(rounds):
                names = [f"vm-{r}-{i}" for i in range(batch)]
                on, ready = await run_vms(client, ns, names)
                on_all += on
                ready_all += ready
                for name in names:
                    await client.delete(n.vm_path(ns, name))
                while (await client.get(n.vm_path(ns))).get("items"):
                    await asyncio.sleep(0.1)
            out[label] = (on_all, ready_all)
        return out
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=5, help="VMs started one after another")
    ap.add_argument("--together", type=int, default=4, help="VMs started at once")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-vms-"))
    image = build_tiny(Path.home() / ".cache" / "atoll")
    assert image.kernel and image.initrd
    seq = [x for _ in range(args.vms) for x in bare_qemu(work, image.kernel, image.initrd, 1)]
    par = bare_qemu(work, image.kernel, image.initrd, args.together)

    with platform(work, NODE, BRIDGE, "10.229.0.0/16") as (data, _port):
        subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "build", "tiny",
                        "--kubeconfig", str(data / "admin.kubeconfig")], check=True,
                       capture_output=True)
        results = asyncio.run(atoll(data, args.vms, args.together))
    print(f"{'start → guest ready (TCG)':34} {'p50 ms':>8} {'max ms':>8} {'mean ms':>8}")
    rows = [("bare QEMU, one at a time", seq), (f"bare QEMU, {args.together} together", par)]
    for label, (on, ready) in results.items():
        rows.append((f"atoll VM, {label}: PoweredOn", on))
        rows.append((f"atoll VM, {label}: guest ready", ready))
    for label, samples in rows:
        print(f"{label:34} {pct(samples, .5):8.0f} {pct(samples, 1):8.0f} "
              f"{statistics.mean(samples) * 1000 if samples else float('nan'):8.0f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
