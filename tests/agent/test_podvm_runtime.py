"""Pod-VMs against real QEMU (TCG here): boot, containers, logs, exit codes, exec, stop, cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from atoll.agent.pods import logs as podlogs
from atoll.agent.podvm.runtime import PodVMRuntime, run_request, size
from atoll.agent.podvm.vm import MARKER
from atoll.agent.runtime.containers import ContainerMeta, container_id

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-system-x86_64") and shutil.which("gcc")
         and os.path.exists("/usr/lib/qemu/virtiofsd") and os.geteuid() == 0),
    reason="needs root, QEMU with virtiofsd and gcc")


@dataclass
class Image:
    layers: list[Path]


@pytest.fixture
def busybox_image(tmp_path: Path) -> Image:
    layer = tmp_path / "layer"
    (layer / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", layer / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "sleep", "uname", "hostname", "ls"):
        (layer / "bin" / applet).symlink_to("busybox")
    return Image([layer])


def container(pods: Path, uid: str, name: str, attempt: int = 0) -> ContainerMeta:
    return ContainerMeta(id=container_id(uid, name, attempt), pod_uid=uid, name=name,
                         attempt=attempt, image="busybox", image_id="sha256:x",
                         log_path=str(pods / uid / "logs" / name / f"{attempt}.log"),
                         created=time.time())


def spec(*args: str, hostname: str = "vmpod") -> dict:
    return {"hostname": hostname,
            "process": {"args": list(args), "env": ["PATH=/bin"], "cwd": "/",
                        "user": {"uid": 0, "gid": 0}}}


def log_text(meta: ContainerMeta) -> str:
    records = [r for r in (podlogs.parse_line(x) for x in
                           Path(meta.log_path).read_bytes().split(b"\n")) if r]
    return b"".join(podlogs.render(records, podlogs.LogOptions())).decode()


def qemu_running(uid: str) -> bool:
    return subprocess.run(["pgrep", "-f", MARKER + uid], capture_output=True).returncode == 0


def test_sizing_from_limits_requests_and_floor() -> None:
    assert size({"containers": [{"name": "a"}]}) == (1, 256)
    two = {"containers": [{"resources": {"limits": {"memory": "64Mi", "cpu": "1500m"}}},
                          {"resources": {"requests": {"memory": "32Mi"}}}]}
    assert size(two) == (min(2, os.cpu_count() or 1), 64 + 32 + 128)
    assert size({"containers": [{"resources": {"limits": {"memory": "bogus"}}}]}) == (1, 256)
    request = run_request("/mnt/pod/x", spec("sh", "-c", "echo hi"))
    assert request.split(b"\0")[:2] == [b"r/mnt/pod/x", b"c/"] and b"ash\0" in request


async def test_pod_vm_runs_containers_exec_and_stops_cleanly(tmp_path: Path,
                                                            busybox_image: Image) -> None:
    pods, uid = tmp_path / "pods", str(uuid.uuid4())
    (pods / uid).mkdir(parents=True)
    (pods / uid / "admitted.json").write_text(json.dumps(
        {"uid": uid, "spec": {"containers": [{"resources": {"limits": {"memory": "64Mi"}}}]}}))
    runtime = PodVMRuntime(tmp_path / "podvm", accel="tcg")
    try:
        # a container that prints and exits 3: output in the CRI log, exit code reported
        hello = container(pods, uid, "hello")
        volume, hosts = tmp_path / "volume", tmp_path / "hosts"
        volume.mkdir()
        (volume / "greeting").write_text("from-a-volume\n")
        hosts.write_text("10.1.2.3 vmpod\n")
        hello_spec = spec("sh", "-c", "echo hello; hostname; cat /proc/sys/kernel/random/boot_id; "
                                      "echo $$; echo oops >&2; cat /data/greeting /etc/hosts; "
                                      "touch /data/nope 2>/dev/null || echo read-only; exit 3")
        hello_spec["mounts"] = [
            {"destination": "/data", "type": "bind", "source": str(volume),
             "options": ["rbind", "rprivate", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": str(hosts),
             "options": ["rbind", "rprivate", "rw"]}]
        pid = await runtime.run(hello, busybox_image, hello_spec)
        assert pid > 0 and runtime.started(hello.id)["pid"] == pid
        vm = runtime.vms[uid]
        assert qemu_running(uid)
        exit_ = await asyncio.wait_for(runtime.wait(hello.id), 60)
        assert exit_["exitCode"] == 3 and runtime.exit_info(hello.id)["exitCode"] == 3
        lines = log_text(hello).splitlines()
        host_boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert lines[:2] == ["hello", "vmpod"]
        assert lines[2] != host_boot and lines[2] == vm.guest.split()[1]
        assert lines[3] == "1"  # its own pid namespace
        assert "oops" in lines
        assert lines[-3:] == ["from-a-volume", "10.1.2.3 vmpod", "read-only"]
        assert b" stderr F oops" in Path(hello.log_path).read_bytes()

        # a long-running container: exec (probes) in its namespaces, then stop with grace
        web = container(pods, uid, "web")
        await runtime.run(web, busybox_image, spec(
            "sh", "-c", "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 0.2; done",
            hostname="web"))
        code, out = await runtime.exec(web.id, ["sh", "-c", "hostname; echo $$; exit 4"],
                                       timeout=30)
        assert code == 4 and out.split()[0] == b"web" and int(out.split()[1]) > 1
        code, out = await runtime.exec(web.id, ["/no/such"], timeout=30)
        assert code != 0 and b"no/such" in out
        assert await runtime.exec(web.id, ["sleep", "30"], timeout=1) == (-1, b"timeout")
        t0 = time.monotonic()
        exit_ = await runtime.stop(web.id, grace=20)
        assert exit_["exitCode"] == 0 and time.monotonic() - t0 < 10
        assert "bye" in log_text(web)

        # a container ignoring SIGTERM (sleep as its namespace's pid 1) is killed after grace
        stubborn = container(pods, uid, "stubborn")
        await runtime.run(stubborn, busybox_image, spec("sleep", "600"))
        t0 = time.monotonic()
        exit_ = await runtime.stop(stubborn.id, grace=1)
        assert exit_["exitCode"] == 137 and exit_["signal"] == 9
        assert 1 <= time.monotonic() - t0 < 15
        assert runtime.signal(stubborn.id, 15) is False

        # a command that does not exist is a start error, the VM stays up
        bad = container(pods, uid, "bad")
        with pytest.raises(Exception, match="no/such"):
            await runtime.run(bad, busybox_image, spec("/no/such"))
        assert vm.alive

        for meta in (hello, web, stubborn, bad):
            await runtime.remove(meta.id)
        assert not qemu_running(uid)
        assert not (tmp_path / "podvm" / "vms" / uid).exists()
        assert os.listdir(tmp_path / "podvm" / "containers") == []
        assert (volume / "greeting").exists() and hosts.exists()  # never deleted through
    finally:
        await runtime.close()
    assert not qemu_running(uid)


async def test_a_dead_vm_fails_its_containers_with_the_console(tmp_path: Path,
                                                              busybox_image: Image) -> None:
    pods, uid = tmp_path / "pods", str(uuid.uuid4())
    (pods / uid).mkdir(parents=True)
    runtime = PodVMRuntime(tmp_path / "podvm", accel="tcg")
    try:
        meta = container(pods, uid, "c")
        other_uid = str(uuid.uuid4())
        other = container(pods, other_uid, "c")
        await asyncio.gather(runtime.run(meta, busybox_image, spec("sleep", "600")),
                             runtime.run(other, busybox_image, spec("sleep", "600")))
        vm = runtime.vms[uid]
        assert vm._qemu is not None
        vm._qemu.kill()  # the guest "panics": QEMU goes away under the container
        exit_ = await asyncio.wait_for(runtime.wait(meta.id), 30)
        assert exit_["exitCode"] == 255 and "pod VM stopped" in exit_["message"]
        assert "atoll-podvm-agent: ready" in exit_["message"]  # the console's last lines
        # the next attempt boots a new VM
        again = container(pods, uid, "c", attempt=1)
        await runtime.run(again, busybox_image, spec("echo", "again"))
        assert (await asyncio.wait_for(runtime.wait(again.id), 60))["exitCode"] == 0
        assert runtime.vms[uid] is not vm
        assert runtime.vms[other_uid].alive and not runtime.wait(other.id).done()  # untouched
        await runtime.stop(other.id, 0)
        await runtime.remove(other.id)
        await runtime.remove(meta.id)
        await runtime.remove(again.id)
    finally:
        await runtime.close()
    assert not qemu_running(uid) and not qemu_running(other_uid)
    assert os.listdir(tmp_path / "podvm" / "vms") == []


@pytest.fixture
def pod_netns():
    """A pod namespace ("pv8pod", eth0 10.250.8.2/24) wired to a "host" namespace (10.250.8.1),
    as CNI would leave it."""
    pod, host = f"pvpod{os.getpid()}", f"pvhost{os.getpid()}"
    script = f"""set -e
ip netns add {pod}; ip netns add {host}
ip -n {host} link add veth0 type veth peer name eth0 netns {pod}
ip -n {host} addr add 10.250.8.1/24 dev veth0; ip -n {host} link set veth0 up
ip -n {pod} addr add 10.250.8.2/24 dev eth0; ip -n {pod} link set eth0 up
ip -n {pod} link set lo up; ip -n {pod} route add default via 10.250.8.1"""
    subprocess.run(["sh", "-c", script], check=True)
    yield f"/run/netns/{pod}", host
    for ns in (pod, host):
        subprocess.run(["ip", "netns", "del", ns], check=False)


async def test_the_pod_ip_lives_in_the_guest(tmp_path: Path, busybox_image: Image,
                                             pod_netns: tuple[str, str]) -> None:
    netns, host = pod_netns
    (busybox_image.layers[0] / "bin" / "nc").symlink_to("busybox")
    pods, uid = tmp_path / "pods", str(uuid.uuid4())
    (pods / uid).mkdir(parents=True)
    runtime = PodVMRuntime(tmp_path / "podvm", accel="tcg")
    try:
        meta = container(pods, uid, "srv")
        pod_spec = spec("sh", "-c", "while :; do echo hello-from-the-vm | nc -l -p 8080; done")
        pod_spec["linux"] = {"namespaces": [{"type": "network", "path": netns}]}
        await runtime.run(meta, busybox_image, pod_spec)

        def fetch() -> str:
            return subprocess.run(["ip", "netns", "exec", host, "busybox", "nc", "-w", "2",
                                   "10.250.8.2", "8080"], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=10).stdout
        deadline = time.monotonic() + 30
        out = ""
        while "hello-from-the-vm" not in out and time.monotonic() < deadline:
            out = await asyncio.to_thread(fetch)
        assert "hello-from-the-vm" in out
        code, addr = await runtime.exec(meta.id, ["sh", "-c", "cat /proc/net/fib_trie"],
                                        timeout=30)
        assert code == 0 and b"10.250.8.2" in addr
        await runtime.stop(meta.id, 1)
        await runtime.remove(meta.id)
    finally:
        await runtime.close()
    assert not qemu_running(uid)
