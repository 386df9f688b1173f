"""Pod-VMs: start-up, host memory, density and exec, beside bare QEMU and runc pods in one run.

    ATOLL_TEST_SLOT=<n> .venv/bin/python bench/podvms.py [--pods 10] [--execs 20] [--idle 2]

1. create → Running for pods with ``runtimeClassName: atoll-vm`` (request sent → the watch shows
   phase Running; one at a time, each deleted before the next but the last ``--idle``), beside
   (a) the same guest booted by hand: virtiofsd and ``qemu-system-x86_64 -M microvm`` with
   ``podvm/vm.py``'s command line for the same kernel, initramfs, vCPUs and RAM, minus Atoll's
   wiring (no API, no CNI or tap, no container root file system), timed from the first exec to
   the guest agent's ready frame on the virtio-serial socket (each bare boot just before a
   pod-VM, so both see the same background load), and (b) runc pods created the same way.
   The agent's own log gives each pod-VM's boot (VM start → ready frame) for the breakdown.
   A warm-up of each kind goes first (the first pod-VM also pays the host's accelerator
   probe).
2. Host memory per idle pod-VM: PSS of its QEMU and virtiofsd (``/proc/<pid>/smaps_rollup``),
   and of that the guest RAM the guest touched (the PSS of the memfd backing guest RAM, which
   both processes map), beside the guest's configured RAM; the bare VM is measured alike.
3. An estimate of how many idle busybox pod-VMs fit in this host's MemAvailable.
4. ``kubectl exec -- true`` round trip into an idle pod-VM and into a runc pod, interleaved.

Runs on `atoll up` with this session's slot bridge 1 (ATOLL_TEST_SLOT), pod, Service and
NodePort ranges; the platform, its bridge, tables and every VM are removed on the way out.
Under TCG here (a guest under KVM hangs on this machine); on a KVM host both sides use KVM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from atoll.agent.podvm import image as guest_image  # noqa: E402
from atoll.agent.podvm.channel import Channel  # noqa: E402
from atoll.agent.podvm.runtime import DEFAULT_MEMORY_MIB, HANDLER  # noqa: E402
from atoll.agent.podvm.vm import MARKER, VIRTIOFSD, VMConfig, command_line  # noqa: E402
from atoll.agent.podvm.vm import _connect, _listen  # noqa: E402
from atoll.client import kubeconfig  # noqa: E402
from atoll.client.rest import ApiClient  # noqa: E402

NODE = "bench-podvm-node"
SLOT_N = 1  # this session's bridge/pod range/Service range number used by the benchmark
NS = "bench-podvms"
SETTLE = 5.0  # seconds an idle VM is left before its memory is read
MIB = 1 << 20


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] * 1000 if s else float("nan")


def mean_ms(samples: list[float]) -> float:
    return statistics.mean(samples) * 1000 if samples else float("nan")


# -- host memory -----------------------------------------------------------------------------------
def pss(pid: int) -> tuple[int, int, int]:
    """(PSS of the process, of its guest-RAM memfd mappings, of its TCG translation cache:
    the anonymous read-write-execute mapping QEMU keeps generated code in), bytes."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            total = int(line.split()[1]) * 1024
    guest = tcg = 0
    kind = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", head[0]):
            name = head[5] if len(head) >= 6 else ""
            kind = "guest" if "/memfd:" in name else "tcg" if (
                head[1] == "rwxp" and not name) else ""
        elif kind and line.startswith("Pss:"):
            if kind == "guest":
                guest += int(head[1]) * 1024
            else:
                tcg += int(head[1]) * 1024
    return total, guest, tcg


def vm_memory(qemu: int, virtiofsd: int) -> dict[str, int]:
    out = {"pss": 0, "guest": 0, "tcg": 0}
    for pid in (qemu, virtiofsd):
        for key, value in zip(("pss", "guest", "tcg"), pss(pid)):
            out[key] += value
    total, guest, _ = pss(virtiofsd)
    out["virtiofsd"] = total - guest
    out["overhead"] = out["pss"] - out["guest"]
    return out


def configured_mib(pid: int) -> int:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    m = argv[argv.index(b"-m") + 1].decode()
    return int(m.rstrip("Mm"))


def mem_info() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


# -- the baseline: the same guest booted by hand ---------------------------------------------------
async def bare_boot(run: Path, image: guest_image.GuestImage, keep: float = 0.0
                    ) -> tuple[float, dict[str, int] | None]:
    """Seconds from the first exec to the agent's ready frame; memory after ``keep`` s idle."""
    shutil.rmtree(run, ignore_errors=True)
    (run / "share").mkdir(parents=True)
    cfg = VMConfig(uid=f"bench-bare-{run.name}", cpus=1, memory_mib=DEFAULT_MEMORY_MIB,
                   accel="tcg", image=image)
    procs: list[asyncio.subprocess.Process] = []
    channel: Channel | None = None
    quiet: dict[str, Any] = {"stdin": asyncio.subprocess.DEVNULL,
                             "stdout": asyncio.subprocess.DEVNULL,
                             "stderr": asyncio.subprocess.DEVNULL, "cwd": run,
                             "start_new_session": True}
    try:
        t0 = time.monotonic()
        listener = _listen(run, "virtiofs.sock")
        try:
            procs.append(await asyncio.create_subprocess_exec(
                VIRTIOFSD, f"--fd={listener.fileno()}", "-o", f"source={run / 'share'}",
                "-o", "sandbox=chroot", "-o", "cache=auto", "-o", "log_level=warn",
                pass_fds=(listener.fileno(),), **quiet))
        finally:
            listener.close()
        procs.append(await asyncio.create_subprocess_exec(*command_line(cfg, run), **quiet))
        deadline = t0 + 120
        while True:  # QEMU makes the socket file before it listens on it
            try:
                reader, writer = await _connect(run, "agent.sock")
                break
            except (FileNotFoundError, ConnectionRefusedError):
                assert procs[1].returncode is None and time.monotonic() < deadline, \
                    f"bare QEMU did not start: {(run / 'console.log').read_bytes()[-500:]!r}"
                await asyncio.sleep(0.01)
        channel = Channel(reader, writer, name="bare")
        await asyncio.wait_for(channel.ready, max(1.0, deadline - time.monotonic()))
        took = time.monotonic() - t0
        memory = None
        if keep:
            await asyncio.sleep(keep)
            memory = vm_memory(procs[1].pid, procs[0].pid)
        return took, memory
    finally:
        if channel is not None:
            channel.close("done")
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
            await p.wait()
        shutil.rmtree(run, ignore_errors=True)


# -- Atoll -----------------------------------------------------------------------------------------
def pod(name: str, vm: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": NODE, "restartPolicy": "Never",
                            "terminationGracePeriodSeconds": 0,
                            "containers": [{"name": "c", "image": "busybox",
                                            "command": ["sleep", "36000"]}]}
    if vm:
        spec["runtimeClassName"] = HANDLER
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def create_running(client: ApiClient, name: str, vm: bool) -> tuple[float, dict]:
    """(create request sent → the watch shows Running, the pod)."""
    path = f"/api/v1/namespaces/{NS}/pods"
    rv = (await client.get(path))["metadata"]["resourceVersion"]
    events = client.watch(path, resource_version=rv, timeout_seconds=300)
    first = asyncio.ensure_future(events.__anext__())
    await asyncio.sleep(0.05)  # the watch is open before the create
    sent = time.perf_counter()
    await client.create(path, pod(name, vm))
    while True:
        ev = await asyncio.wait_for(first, 300)
        obj = ev.get("object") or {}
        phase = (obj.get("status") or {}).get("phase")
        if (obj.get("metadata") or {}).get("name") != name:
            phase = None
        if phase == "Running":
            took = time.perf_counter() - sent
            await events.aclose()
            return took, obj
        assert phase not in ("Failed", "Succeeded"), f"{name}: {obj.get('status')}"
        first = asyncio.ensure_future(events.__anext__())


async def delete(client: ApiClient, name: str) -> None:
    path = f"/api/v1/namespaces/{NS}/pods/{name}"
    await client.delete(path, gracePeriodSeconds=0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            await client.get(path)
        except Exception:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} not deleted in 120 s")


def kubectl(data: Path, *args: str) -> float:
    from tests.conftest import kubectl_binary
    env = dict(os.environ, KUBECONFIG=str(data / "admin.kubeconfig"),
               KUBECACHEDIR=str(data.parent / "kubecache"))
    t0 = time.perf_counter()
    r = subprocess.run([kubectl_binary(), *args], capture_output=True, text=True, env=env,
                       timeout=60)
    took = time.perf_counter() - t0
    assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
    return took


def podvm_pids(data: Path, uid: str) -> list[int]:
    from tests.conftest import run_dir
    run = run_dir(data) / "podvm" / "vms" / uid
    return [int((run / f"{name}.pid").read_text()) for name in ("qemu", "virtiofsd")]


async def platform_bench(data: Path, args: argparse.Namespace, work: Path,
                         image: guest_image.GuestImage) -> dict[str, Any]:
    client = ApiClient(kubeconfig.load(data / "admin.kubeconfig"), user_agent="bench-podvms")
    out: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while True:  # the agent registers its Node just after the platform is ready
            try:
                node = await client.get(f"/api/v1/nodes/{NODE}")
                if HANDLER in [h.get("name") for h in
                               (node.get("status") or {}).get("runtimeHandlers") or []]:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "the agent did not offer atoll-vm on its Node"
            await asyncio.sleep(0.2)
        await client.create("/api/v1/namespaces", {"metadata": {"name": NS}})
        deadline = time.monotonic() + 30
        while True:  # a pod needs its namespace's default ServiceAccount
            try:
                await client.get(f"/api/v1/namespaces/{NS}/serviceaccounts/default")
                break
            except Exception:
                assert time.monotonic() < deadline, "no default ServiceAccount"
                await asyncio.sleep(0.1)
        for kind, vm in (("runc", False), ("vm", True)):
            took, _ = await create_running(client, f"{kind}-warm", vm)
            out[f"{kind}_warm"] = took
            print(f"  warm-up {kind} pod: {took * 1000:.0f} ms", flush=True)
            await delete(client, f"{kind}-warm")
            times, kept = [], []
            for i in range(args.pods):
                name = f"{kind}-{i}"
                if vm:  # the baseline, interleaved so both see the same background load
                    took, mem = await bare_boot(work / f"bare{i}", image,
                                                SETTLE if i == args.pods - 1 else 0.0)
                    out.setdefault("bare", []).append(took)
                    out["bare_mem"] = mem or out.get("bare_mem")
                    print(f"  bare-{i}: {took * 1000:.0f} ms", flush=True)
                took, obj = await create_running(client, name, vm)
                times.append(took)
                print(f"  {name}: {took * 1000:.0f} ms", flush=True)
                if i >= args.pods - (args.idle if vm else 1):
                    kept.append(obj)
                else:
                    await delete(client, name)
            out[kind] = times
            out[f"{kind}_kept"] = kept
        vm_pod, runc_pod = out["vm_kept"][-1]["metadata"]["name"], out["runc_kept"][0][
            "metadata"]["name"]
        # 4. exec round trips, interleaved
        out["exec_vm"], out["exec_runc"] = [], []
        for _ in range(args.execs):
            out["exec_vm"].append(kubectl(data, "exec", "-n", NS, vm_pod, "--", "true"))
            out["exec_runc"].append(kubectl(data, "exec", "-n", NS, runc_pod, "--", "true"))
        # 2. memory of the idle pod-VMs (the last was started SETTLE s ago at least)
        started = time.monotonic()
        while time.monotonic() - started < SETTLE:
            await asyncio.sleep(0.5)
        out["memory"] = []
        for obj in out["vm_kept"]:
            pids = podvm_pids(data, obj["metadata"]["uid"])
            mem = vm_memory(*pids)
            mem["configured"] = configured_mib(pids[0]) * MIB
            argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes()
            out["accel"] = "tcg" if b"accel=tcg" in argv else "kvm"
            out["memory"].append(mem)
        out["meminfo"] = mem_info()
        for obj in out["vm_kept"] + out["runc_kept"]:
            await delete(client, obj["metadata"]["name"])
        return out
    finally:
        await client.close()


@contextmanager
def slot_platform(work: Path) -> Iterator[tuple[Path, str]]:
    from tests.conftest import (cleanup_agent, free_port, run_dir, slot_bridge, slot_cidr,
                                start_platform, stop_platform)

    bridge, cidr = slot_bridge(SLOT_N), slot_cidr(SLOT_N)
    data = work / "data"
    p = start_platform(data, None, f"--agent-arg=--name={NODE}", f"--agent-arg=--bridge={bridge}",
                       f"--agent-arg=--pod-cidr={cidr}", f"--agent-arg=--port={free_port()}",
                       f"--agent-arg=--run-dir={run_dir(data)}")
    try:
        yield data, bridge
    finally:
        stop_platform(p)
        cleanup_agent(data / "agent", bridge, run_dir(data))
        shutil.copy(p.log_path, Path(tempfile.gettempdir()) / "atoll-bench-podvms-up.log")


def leftovers(bridge: str, work: Path) -> list[str]:
    """What of this run is still on the host (nothing, when cleanup worked): its processes are
    the ones working in its scratch directory (other sessions' pod-VMs are not counted)."""
    out = []
    qemus = subprocess.run(["pgrep", "-f", MARKER], capture_output=True, text=True).stdout
    for pid in qemus.split():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(work)):
                out.append(f"process {pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()[:80]!r}")
    if subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode == 0:
        out.append(f"bridge {bridge}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    out += [f"nft {t}" for t in tables.splitlines() if bridge in t or NODE in t]
    return out


# -- report ----------------------------------------------------------------------------------------
def report(plat: dict[str, Any], boots: list[float], loads: tuple[str, str]) -> None:
    bare, bare_mem = plat["bare"], plat.get("bare_mem")
    accel = plat.get("accel", "tcg").upper()
    print(f"\n== 1. create → Running ({accel}: every guest figure here is {accel}; "
          f"one at a time, n={len(bare)})")
    print(f"{'':52} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    rows = [("bare QEMU microvm: exec → agent ready frame", bare),
            ("atoll pod-VM: create → Running", plat["vm"]),
            ("  of which VM start → ready frame (agent's log)", boots),
            ("atoll runc pod: create → Running", plat["runc"])]
    for label, s in rows:
        print(f"{label:52} {pct(s, .5):8.0f} {pct(s, .99):8.0f} {mean_ms(s):8.0f}")
    print(f"{'pod-VM / bare QEMU (target ≤ 1.2×)':52} "
          f"{pct(plat['vm'], .5) / pct(bare, .5):7.2f}× "
          f"{pct(plat['vm'], .99) / pct(bare, .99):7.2f}× "
          f"{mean_ms(plat['vm']) / mean_ms(bare):7.2f}×")
    print(f"{'pod-VM / runc pod':52} {pct(plat['vm'], .5) / pct(plat['runc'], .5):7.1f}× "
          f"{pct(plat['vm'], .99) / pct(plat['runc'], .99):7.1f}×")
    print(f"warm-up (not counted): runc pod {plat['runc_warm'] * 1000:.0f} ms, pod-VM "
          f"{plat['vm_warm'] * 1000:.0f} ms (includes the host's accelerator probe)")

    print(f"\n== 2. Host memory per idle busybox VM ({SETTLE:.0f}+ s idle; MiB; {accel})")
    print(f"{'':20} {'QEMU+virtiofsd PSS':>18} {'guest RAM touched':>17} {'overhead':>9} "
          f"{'of it TCG code':>14} {'virtiofsd':>9} {'guest RAM':>9}")
    mems = [("bare QEMU", bare_mem)] if bare_mem else []
    mems += [(f"atoll pod-VM {i}", m) for i, m in enumerate(plat["memory"])]
    for label, m in mems:
        conf = m.get("configured", DEFAULT_MEMORY_MIB * MIB)
        print(f"{label:20} {m['pss'] / MIB:18.1f} {m['guest'] / MIB:17.1f} "
              f"{m['overhead'] / MIB:9.1f} {m['tcg'] / MIB:14.1f} {m['virtiofsd'] / MIB:9.1f} "
              f"{conf / MIB:9.0f}")
    print("overhead = PSS of both processes minus the PSS of the guest-RAM memfd (target "
          "≤ 40 MiB); TCG code =\nQEMU's translation cache (a KVM host has none); guest RAM = "
          "configured (-m)")

    info = plat["meminfo"]
    per_vm = statistics.mean(m["pss"] for m in plat["memory"])
    overhead = statistics.mean(m["overhead"] for m in plat["memory"])
    conf = statistics.mean(m["configured"] for m in plat["memory"])
    print(f"\n== 3. Idle busybox pod-VMs that would fit (estimate, none started beyond "
          f"{len(plat['memory'])})")
    print(f"host MemTotal {info['MemTotal'] / (1 << 30):.1f} GiB, MemAvailable "
          f"{info['MemAvailable'] / (1 << 30):.1f} GiB")
    print(f"{'by idle PSS (' + f'{per_vm / MIB:.1f} MiB per VM' + ')':52} "
          f"{int(info['MemAvailable'] // per_vm):>8,}")
    tcg = statistics.mean(m["tcg"] for m in plat["memory"])
    print(f"{'by idle PSS less the TCG code cache (as under KVM)':52} "
          f"{int(info['MemAvailable'] // (per_vm - tcg)):>8,}")
    print(f"{'if every guest touched its ' + f'{conf / MIB:.0f} MiB' + ' (+ overhead)':52} "
          f"{int(info['MemAvailable'] // (conf + overhead)):>8,}")
    print("(memory only: CPU, pids and pod IPs are not counted; under TCG every idle guest "
          "also costs host CPU)")

    print(f"\n== 4. kubectl exec -- true round trip (n={len(plat['exec_vm'])} each, interleaved)")
    print(f"{'':52} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for label, s in (("atoll pod-VM", plat["exec_vm"]), ("atoll runc pod", plat["exec_runc"])):
        print(f"{label:52} {pct(s, .5):8.0f} {pct(s, .99):8.0f} {mean_ms(s):8.0f}")
    print(f"\nload average before {loads[0]}, after {loads[1]}; {os.cpu_count()} CPUs")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10, help="pods (and bare boots) of each kind")
    ap.add_argument("--execs", type=int, default=20, help="kubectl exec round trips of each")
    ap.add_argument("--idle", type=int, default=2, help="idle pod-VMs kept for memory")
    args = ap.parse_args()
    args.idle = max(1, min(args.idle, args.pods))
    before = load()
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-podvms-"))
    bridge = ""
    try:
        image = guest_image.build()
        print(f"load average {before}; bare QEMU boots of {image.kernel.name} + "
              f"{image.initrd.parent.name}/initrd.img", flush=True)
        # page cache: kernel, initramfs and binaries, before anything is timed
        asyncio.run(bare_boot(work / "bare-warm", image))
        with slot_platform(work) as (data, bridge):
            plat = asyncio.run(platform_bench(data, args, work, image))
            log = (data.parent / f"{data.name}-up.log").read_text(errors="replace")
        # the agent logs each pod-VM's boot; the first is the warm-up pod's
        boots = [float(x) for x in re.findall(r"pod-vm \S+: booted in ([0-9.]+) s", log)][1:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(plat, boots, (before, load()))
    left = leftovers(bridge, work)
    print("left behind: " + ("; ".join(left) if left else "nothing (no QEMU, bridge or table)"))


if __name__ == "__main__":
    main()
