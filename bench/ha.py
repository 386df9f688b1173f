"""High availability, timed with the default settings.

    .venv/bin/python bench/ha.py [--rounds 3] [--skip-vm] [--skip-etcd]

0. Throughput over a 3-member etcd: etcd's own write rate through the same client (raw
   creates, 64 concurrent), then API creates/s (32 clients) through one and through three API
   servers over that etcd.

1. Leader loss: two controller managers (default election: lease 15 s, renew deadline 10 s,
   retry 2 s) over one API server; the leader is killed (`kill -9`) and a pod is created at once;
   measured: kill → the pod bound by the new leader's scheduler.
2. Host loss: `atoll up` (host B) plus a second agent (host A) that reaches the API through a
   relay; a VM annotated for HA runs on A (default Lease 8 s, renewal 2 s); the relay is cut, as a
   pulled cable; measured: cut → A has powered the VM off (fencing), → the VM is moved to B, →
   QEMU is running on B, → the guest is ready (cloud-init done) on B.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._up import api_server, platform  # noqa: E402
from tests.conftest import cleanup_agent, free_port, kubectl_binary, wait_until  # noqa: E402
from tests.e2e.test_vm_ha import Cuttable, qemu_of  # noqa: E402

HOST = "vmoperator.atoll.dev/host"


def kubectl(kc: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl_binary(), *args], input=input, capture_output=True, text=True,
                          env=dict(os.environ, KUBECONFIG=str(kc)), timeout=60)


def atoll_cmd(*args: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "atoll.cli.main", *args], stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


# -- 0. throughput over etcd ---------------------------------------------------------------------
def etcd_throughput(seconds: float = 5.0) -> list[tuple[str, float, float]]:
    import asyncio as aio

    from atoll.storage.etcd import EtcdStore
    from bench.api import Bench, pct
    from tests.e2e.test_etcd_servers import Server
    from tests.etcd import start_etcd

    work = Path(tempfile.mkdtemp(prefix="atoll-bench-etcd-"))
    etcd = start_etcd(work, members=3)
    rows: list[tuple[str, float, float]] = []
    try:
        async def raw() -> tuple[float, list[float]]:
            store = EtcdStore(etcd.url)
            await store.start()
            lat: list[float] = []
            stop = time.perf_counter() + seconds
            counter = iter(range(10 ** 9))

            async def writer() -> None:
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    await store.create(f"/bench/raw/{next(counter)}", b"x" * 600)
                    lat.append(time.perf_counter() - t)
            started = time.perf_counter()
            await aio.gather(*(writer() for _ in range(64)))
            rate = len(lat) / (time.perf_counter() - started)
            await store.close()
            return rate, lat
        rate, lat = aio.run(raw())
        rows.append(("etcd alone (raw creates, 64 at a time)", rate, pct(lat, .99)))
        servers = [Server(work, "h1", etcd.url)]
        wait_until("server 1", lambda: (servers[0].data / "admin.kubeconfig").exists(), 60)
        servers += [Server(work, f"h{i}", etcd.url, ca_from=servers[0].data) for i in (2, 3)]
        ca = servers[0].data / "pki" / "ca.crt"
        wait_until("servers ready", lambda: all(s.ready(ca) for s in servers), 60)
        try:
            for label, using in (("1 API server over etcd", servers[:1]),
                                 ("3 API servers over etcd", servers)):
                benches = [Bench(servers[0].data, s.port) for s in using]

                async def api(benches: list = benches) -> tuple[float, list[float]]:
                    await benches[0].ensure_ns("bench")
                    results = await aio.gather(*(
                        b.run_for(seconds, 32 // len(benches),
                                  lambda sess, b=b: b.create(sess, "bench"))
                        for b in benches))
                    return sum(r[0] for r in results), [x for r in results for x in r[1]]
                for i, b in enumerate(benches):
                    b.counter = 10 ** 6 * (i + 1) + (len(using) * 10 ** 7)
                rate, lat = aio.run(api())
                rows.append((label + " (32 clients)", rate, pct(lat, .99)))
        finally:
            for s in servers:
                s.kill()
    finally:
        etcd.stop()
    return rows


# -- 1. leader loss --------------------------------------------------------------------------------
def leader_loss(rounds: int) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-ha-"))
    data = work / "data"
    times = []
    with api_server(data):
        kc = data / "admin.kubeconfig"
        kubectl(kc, "apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench-node"},
            "status": {"capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                       "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}))
        kubectl(kc, "create", "namespace", "bench")
        managers = [atoll_cmd("controller-manager", "--kubeconfig", str(kc),
                              log=work / f"cm{i}.log") for i in range(2)]
        try:
            for r in range(rounds):
                holder = wait_until("a leader", lambda: kubectl(
                    kc, "-n", "kube-system", "get", "lease", "atoll-controller-manager", "-o",
                    "jsonpath={.spec.holderIdentity}").stdout.strip(), 60)
                leader = next(i for i, m in enumerate(managers)
                              if m.poll() is None and _log_says_leader(work / f"cm{i}.log",
                                                                        holder))
                os.killpg(managers[leader].pid, signal.SIGKILL)
                managers[leader].wait()
                killed = time.monotonic()
                name = f"p{r}"
                kubectl(kc, "-n", "bench", "run", name, "--image=busybox", "--restart=Never",
                        "--", "true")
                wait_until("the pod bound", lambda: kubectl(
                    kc, "-n", "bench", "get", "pod", name, "-o",
                    "jsonpath={.spec.nodeName}").stdout.strip(), 120, interval=0.05)
                times.append(time.monotonic() - killed)
                print(f"  round {r + 1}: leader killed → pod bound in {times[-1]:.1f} s",
                      flush=True)
                managers[leader] = atoll_cmd("controller-manager", "--kubeconfig", str(kc),
                                             log=work / f"cm{leader}.log")
        finally:
            for m in managers:
                if m.poll() is None:
                    os.killpg(m.pid, signal.SIGKILL)
    return times


def _log_says_leader(log: Path, holder: str) -> bool:
    try:
        return f"now the leader ({holder})" in log.read_text()
    except OSError:
        return False


# -- 2. host loss ------------------------------------------------------------------------------------
def host_loss(rounds: int) -> list[dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="atoll-bench-ha-"))
    results: list[dict[str, float]] = []
    with platform(work, "bench-ha-b", "atollb6", "10.228.0.0/16") as (data, port):
        kc = data / "admin.kubeconfig"
        subprocess.run([sys.executable, "-m", "atoll.cli.main", "image", "build", "tiny",
                        "--kubeconfig", str(kc)], check=True, capture_output=True)
        kubectl(kc, "create", "namespace", "bench")
        wait_until("the default classes", lambda: kubectl(
            kc, "-n", "bench", "get", "vmclass", "best-effort-xsmall").returncode == 0, 30)
        relay = Cuttable(port)
        node_kc = work / "a.kubeconfig"
        node_kc.write_text(subprocess.run(
            [sys.executable, "-m", "atoll.cli.main", "kubeconfig", "--data-dir", str(data),
             "--node", "bench-ha-a"], capture_output=True, text=True, check=True).stdout)
        run_a = Path(tempfile.mkdtemp(prefix="a-", dir="/tmp"))
        agent = atoll_cmd("agent", "--kubeconfig", str(node_kc), "--server",
                          f"https://127.0.0.1:{relay.port}", "--name", "bench-ha-a",
                          "--data-dir", str(work / "a"), "--run-dir", str(run_a),
                          "--bridge", "atollb7", "--pod-cidr", "10.227.0.0/16",
                          "--port", str(free_port()), log=work / "a.log")
        try:
            wait_until("host a Ready", lambda: "True" in kubectl(
                kc, "get", "node", "bench-ha-a", "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}").stdout, 60)
            for r in range(rounds):
                results.append(_one_host_loss(kc, relay, run_a, f"vm{r}"))
                relay.restore()
                wait_until("host a back", lambda: "True" in kubectl(
                    kc, "get", "node", "bench-ha-a", "-o",
                    "jsonpath={.status.conditions[?(@.type=='Ready')].status}").stdout, 60)
        finally:
            relay.close()
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
            cleanup_agent(work / "a", "atollb7", run_a)
    return results


def _vm(kc: Path, name: str) -> dict[str, Any]:
    out = kubectl(kc, "-n", "bench", "get", "vm", name, "-o", "json")
    return json.loads(out.stdout) if out.returncode == 0 else {}


def _one_host_loss(kc: Path, relay: Cuttable, run_a: Path, name: str) -> dict[str, float]:
    kubectl(kc, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": "bench", "labels": {HOST: "bench-ha-a"},
                     "annotations": {"vmoperator.atoll.dev/restart-on-host-failure": "true"}},
        "spec": {"className": "best-effort-xsmall", "imageName": "tiny",
                 "powerState": "PoweredOn"}}))
    uid = wait_until("the VM on host a", lambda: (v := _vm(kc, name)) and
                     (v.get("status") or {}).get("powerState") == "PoweredOn" and
                     v["metadata"]["uid"], 180)
    old = wait_until("its QEMU", lambda: qemu_of(run_a, uid), 30)
    console = f"/apis/vmoperator.vmware.com/v1alpha3/namespaces/bench/virtualmachines/{name}/console"
    wait_until("the guest ready on a", lambda: "atoll-tiny: ready" in kubectl(
        kc, "get", "--raw", console).stdout, 120, interval=0.3)
    relay.cut()
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    while len(marks) < 4 and time.monotonic() - t0 < 120:
        now = time.monotonic() - t0
        if "fenced" not in marks and not os.path.exists(f"/proc/{old}"):
            marks["fenced"] = now
        vm = _vm(kc, name)
        if "moved" not in marks and vm and vm["metadata"]["labels"].get(HOST) != "bench-ha-a":
            marks["moved"] = now
        if "moved" in marks and "running" not in marks and \
                (vm.get("status") or {}).get("powerState") == "PoweredOn":
            marks["running"] = now
        if "running" in marks and "ready" not in marks and "atoll-tiny: ready" in kubectl(
                kc, "get", "--raw", console).stdout:
            marks["ready"] = now
        time.sleep(0.1)
    print(f"  {name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in marks.items()), flush=True)
    kubectl(kc, "-n", "bench", "delete", "vm", name, "--wait=false")
    return marks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-vm", action="store_true", help="skip the host-loss part")
    ap.add_argument("--skip-etcd", action="store_true", help="skip the etcd throughput part")
    args = ap.parse_args()
    if not args.skip_etcd:
        print(f"{'writes over a 3-member etcd':44} {'per s':>8} {'p99 ms':>8}")
        for label, rate, p99 in etcd_throughput():
            print(f"{label:44} {rate:8.0f} {p99:8.1f}", flush=True)
        print()
    print("leader loss (lease 15 s, renew deadline 10 s, retry 2 s):")
    leader = leader_loss(args.rounds)
    vm = [] if args.skip_vm else (print("host loss (Lease 8 s, renewal 2 s):") or
                                  host_loss(args.rounds))
    print()
    print(f"{'what':52} {'p50 s':>6} {'max s':>6}")
    rows = [("controller leader killed → pod bound by the new one", leader)]
    for key, label in (("fenced", "host cut off → VM powered off there (fencing)"),
                       ("moved", "host cut off → VM moved to another host"),
                       ("running", "host cut off → QEMU running on the other host"),
                       ("ready", "host cut off → guest ready on the other host")):
        rows.append((label, [m[key] for m in vm if key in m]))
    for label, samples in rows:
        if samples:
            print(f"{label:52} {statistics.median(samples):6.1f} {max(samples):6.1f}")


if __name__ == "__main__":
    main()
