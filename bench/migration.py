"""Live migration beside bare QEMU-to-QEMU migration of the same guest, in one run.

    ATOLL_TEST_SLOT=<n> .venv/bin/python bench/migration.py [--runs 3] [--drain 3]

1. A 1 GiB, 1 vCPU guest (the tiny image with a 256 MiB local qcow2 disk) migrated between
   the two hosts of an `atoll dev cluster` with `atoll vm migrate` (API object → both agents →
   QMP, disk mirrored over NBD, memory over TCP), idle and busy (the guest rewrites 200 MiB of
   tmpfs from /dev/urandom in a loop), ``--runs`` times each, alternating direction.
2. Beside it, the same guest booted by hand (the same kernel, initramfs, command line, seed and
   a copy-on-write disk over the same base, no NIC) migrated between two bare QEMUs on this
   machine over TCP with the same QMP sequence (NBD mirror ``sync: top, write-blocking``,
   events + auto-converge, ``migrate``, cancel of the READY mirror), each bare run right after
   an Atoll run so both see the same load.
   Figures: QEMU's own ``downtime`` and ``total-time`` for both; for Atoll also the wall time from
   the migration object's creation to ``Succeeded`` (what a user waits for).
3. Drain: ``--drain`` idle VMs on one host, time from ``kubectl cordon`` to every VM running
   on the other host.

Under TCG here (a guest under KVM hangs on this machine), so both sides copy a TCG guest.
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
from qemu.qmp import QMPClient  # noqa: E402

from atoll.agent.runtime.qemu import Disk, LaunchConfig, command_line  # noqa: E402
from tests.conftest import TEST_SLOT, free_port  # noqa: E402
from tests.e2e.devcluster import DevCluster  # noqa: E402

NS = "bench-mig"
HOST = "vmoperator.atoll.dev/host"
BUSY = ("mkdir -p /d && mount -t tmpfs -o size=256m tmpfs /d && "
        "(while :; do dd if=/dev/urandom of=/d/x bs=1M count=200 2>/dev/null; done) &")
SETTLE = 8.0  # seconds after boot before the first move (the guest's own start-up is over)


def vm_manifest(name: str, host: str, runcmd: list[str]) -> str:
    return json.dumps({
        "apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": NS, "labels": {HOST: host}},
        "spec": {"className": "bench-1g", "imageName": "tiny-disk", "powerState": "PoweredOn",
                 "bootstrap": {"cloudInit": {"cloudConfig": {"runcmd": runcmd or ["true"]}}}}})


def booted(dev: DevCluster, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        vm = dev.get("vm", "-n", NS, name)
        return vm if any(c["type"] == "GuestBootstrap" and c["status"] == "True"
                         for c in (vm.get("status") or {}).get("conditions") or []) else None
    return dev.wait(f"{name} booted", done, 300)


def ms(text: str) -> float:
    return float(text.rstrip("ms")) if text else float("nan")


# -- Atoll ---------------------------------------------------------------------------------------
def atoll_move(dev: DevCluster, name: str, target: str) -> dict[str, float]:
    started = time.monotonic()
    out = dev.atoll("vm", "migrate", name, "-n", NS, "--to", target)
    wall = time.monotonic() - started
    if out.returncode:
        raise SystemExit(f"atoll vm migrate failed: {out.stdout}{out.stderr}")
    mig = max((m for m in dev.get("vmim", "-n", NS)["items"] if m["spec"]["vmName"] == name),
              key=lambda m: m["metadata"]["creationTimestamp"] + m["metadata"]["name"])
    st = mig["status"]
    return {"downtime": ms(st.get("downtime", "")), "total": ms(st.get("totalTime", "")),
            "wall": wall * 1000}


# -- bare QEMU -----------------------------------------------------------------------------------
def bare_config(uid: str, work: Path) -> tuple[LaunchConfig, LaunchConfig, str]:
    """Source and target configs copied from the running Atoll VM's own QEMU command line."""
    pid = next(int(p) for p in subprocess.run(["pgrep", "-f", "--", f"-uuid {uid}"],
                                               capture_output=True, text=True).stdout.split())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    arg = {argv[i].decode(): argv[i + 1].decode() for i in range(len(argv) - 1)
           if argv[i].startswith(b"-")}
    drives = [a.decode() for i, a in enumerate(argv) if i and argv[i - 1] == b"-drive"]
    files = [dict(kv.split("=", 1) for kv in d.split(",") if "=" in kv)["file"] for d in drives]
    boot = next(f for f in files if f.endswith("boot.qcow2"))
    seed = next(f for f in files if f.endswith(".iso"))
    base = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", boot],
                                     capture_output=True, text=True, check=True).stdout)
    backing = base["full-backing-filename"]
    configs = []
    for side in ("src", "dst"):
        d = work / side
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(seed, d / "seed.iso")
        configs.append(LaunchConfig(
            name=f"bench/bare-{side}", uuid=f"bbbbbbbb-0000-0000-0000-{TEST_SLOT:012d}",
            cpus=int(arg["-smp"]), memory_mib=int(arg["-m"].rstrip("M")),
            accel="tcg", kernel=Path(arg["-kernel"]), initrd=Path(arg["-initrd"]),
            cmdline=arg["-append"], incoming=side == "dst",
            disks=[Disk(d / "boot.qcow2"), Disk(d / "seed.iso", format="raw", readonly=True,
                                                 serial="cidata")]))
    return configs[0], configs[1], backing


async def bare_move(work: Path, src_cfg: LaunchConfig, dst_cfg: LaunchConfig,
                    backing: str) -> dict[str, float]:
    """Boot the guest on a bare source (fresh disks), then migrate it to a bare target as the
    agents do."""
    shutil.rmtree(work, ignore_errors=True)
    for cfg in (src_cfg, dst_cfg):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing,
                        str(cfg.disks[0].path)], check=True)
    src_run, dst_run = work / "src", work / "dst"
    src_run.mkdir(parents=True)
    dst_run.mkdir(parents=True)
    try:
        subprocess.run(command_line(src_cfg, src_run), check=True)
        marker = b"atoll-tiny: cloud-init done"
        deadline = time.monotonic() + 300
        while marker not in _read(src_run / "console.log"):
            if time.monotonic() > deadline:
                raise SystemExit("the bare guest did not boot")
            await asyncio.sleep(0.2)
        await asyncio.sleep(SETTLE)
        subprocess.run(command_line(dst_cfg, dst_run), check=True)
        s, t = QMPClient("bench-src"), QMPClient("bench-dst")
        await s.connect(str(src_run / "qmp.sock"))
        await t.connect(str(dst_run / "qmp.sock"))
        nbd, port = free_port(), free_port()
        started = time.monotonic()
        node = {b["device"]: b["inserted"]["node-name"] for b in await t.execute("query-block")
                if b.get("inserted") and not b["inserted"]["ro"]}
        await t.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": "events", "state": True}]})
        await t.execute("nbd-server-start", {"addr": {"type": "inet", "data": {
            "host": "127.0.0.1", "port": str(nbd)}}})
        await t.execute("block-export-add", {"type": "nbd", "id": "e0", "name": "disk0",
                                             "node-name": node["disk0"], "writable": True})
        await t.execute("migrate-incoming", {"uri": f"tcp:127.0.0.1:{port}"})
        await s.execute("blockdev-add", {"driver": "nbd", "node-name": "n0", "export": "disk0",
                                         "server": {"type": "inet", "host": "127.0.0.1",
                                                    "port": str(nbd)}})
        await s.execute("blockdev-mirror", {"job-id": "m0", "device": "disk0", "target": "n0",
                                            "sync": "top", "copy-mode": "write-blocking"})
        while not all(j.get("ready") for j in await s.execute("query-block-jobs")):
            await asyncio.sleep(0.05)
        await s.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": "events", "state": True},
            {"capability": "auto-converge", "state": True}]})
        await s.execute("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        while True:
            info = await s.execute("query-migrate")
            if info.get("status") == "completed" and info.get("total-time"):
                break
            if info.get("status") in ("failed", "cancelled"):
                raise SystemExit(f"bare migration {info.get('status')}")
            await asyncio.sleep(0.05)
        await s.execute("block-job-cancel", {"device": "m0"})
        wall = time.monotonic() - started
        for q in (s, t):
            await q.disconnect()
        return {"downtime": float(info["downtime"]), "total": float(info["total-time"]),
                "wall": wall * 1000}
    finally:
        for run in (src_run, dst_run):
            try:
                os.kill(int((run / "qemu.pid").read_text()), 9)
            except (OSError, ValueError):
                pass


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


# -- drain ---------------------------------------------------------------------------------------
def drain(dev: DevCluster, count: int) -> float:
    names = [f"drain-{i}" for i in range(count)]
    for name in names:
        dev.kubectl("apply", "-f", "-", input=vm_manifest(name, dev.host(1), []).replace(
            "bench-1g", "best-effort-xsmall").replace("tiny-disk", "tiny"))
    for name in names:
        booted(dev, name)
    time.sleep(SETTLE)
    started = time.monotonic()
    dev.kubectl("cordon", dev.host(1))
    dev.wait("the host empty", lambda: all(
        (dev.get("vm", "-n", NS, n)["metadata"]["labels"].get(HOST) == dev.host(2))
        for n in names), 600)
    took = time.monotonic() - started
    dev.kubectl("uncordon", dev.host(1))
    dev.kubectl("delete", "vm", "-n", NS, *names, "--wait=false")
    return took


def summary(label: str, runs: list[dict[str, float]]) -> str:
    def col(key: str) -> str:
        values = [r[key] for r in runs]
        return f"{statistics.median(values):8.0f} {max(values):8.0f}"
    return f"{label:18} {col('downtime')}   {col('total')}   {col('wall')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--drain", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-mig-"))
    dev = DevCluster(work, 2, f"bmg{TEST_SLOT}-")
    results: dict[str, list[dict[str, float]]] = {}
    try:
        dev.start()
        for argv in (["image", "build", "tiny"],
                     ["image", "build", "tiny", "--disk", "256M", "--name", "tiny-disk"]):
            out = dev.atoll(*argv, timeout=900)
            if out.returncode:
                raise SystemExit(out.stdout + out.stderr)
        dev.kubectl("create", "namespace", NS)
        dev.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachineClass",
            "metadata": {"name": "bench-1g", "namespace": NS},
            "spec": {"hardware": {"cpus": 1, "memory": "1Gi"}}}))
        for load in ("idle", "busy"):
            name = f"guest-{load}"
            dev.kubectl("apply", "-f", "-", input=vm_manifest(
                name, dev.host(1), [BUSY] if load == "busy" else []))
            vm = booted(dev, name)
            time.sleep(SETTLE)
            src_cfg, dst_cfg, backing = bare_config(vm["metadata"]["uid"], work / "bare-cfg")
            for r in range(args.runs):
                target = dev.host(2 if r % 2 == 0 else 1)
                results.setdefault(f"atoll {load}", []).append(atoll_move(dev, name, target))
                results.setdefault(f"bare QEMU {load}", []).append(asyncio.run(bare_move(
                    work / "bare", src_cfg, dst_cfg, backing)))
                print(f"  {load} run {r + 1}: atoll {results[f'atoll {load}'][-1]}, bare "
                      f"{results[f'bare QEMU {load}'][-1]}", file=sys.stderr)
            dev.kubectl("delete", "vm", "-n", NS, name, "--wait=false")
        drained = drain(dev, args.drain)
    finally:
        dev.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nlive migration, 1 GiB / 1 vCPU guest with a 256 MiB local qcow2 disk, TCG, "
          f"{args.runs} runs (ms: median, max)")
    print(f"{'':18} {'downtime':>17}   {'QEMU total':>17}   {'wall':>17}")
    for label in ("atoll idle", "bare QEMU idle", "atoll busy", "bare QEMU busy"):
        print(summary(label, results[label]))
    print(f"\ndrain of a host with {args.drain} idle VMs (cordon -> all running elsewhere): "
          f"{drained:.1f} s")


if __name__ == "__main__":
    main()
