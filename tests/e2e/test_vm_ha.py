"""vSphere-style HA: a host cut off from the API fences its protected VMs, and the VMs start on
another host; when the host comes back its stale copy is gone, so each VM runs exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import (Platform, cleanup_agent, free_port, pids_of, slot_bridge, slot_cidr,
                            wait_until)
from tests.e2e.test_vms import GROUP, alive, get_vm, tiny_image  # noqa: F401 (a fixture)

HOST = "vmoperator.atoll.dev/host"


class Cuttable:
    """A TCP relay to the API server that the test can cut, as a pulled network cable would."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def start_agent(platform: Platform, tmp: Path, name: str, slot: int,
                server: str | None = None) -> tuple[subprocess.Popen, Path]:
    kc = tmp / f"{name}.kubeconfig"
    kc.write_text(subprocess.run([sys.executable, "-m", "atoll.cli.main", "kubeconfig",
                                  "--data-dir", str(platform.data_dir), "--node", name],
                                 capture_output=True, text=True, check=True).stdout)
    run = Path(tempfile.mkdtemp(prefix=f"{name[-1]}-", dir="/tmp"))  # unix sockets: short paths
    args = [sys.executable, "-m", "atoll.cli.main", "agent", "--kubeconfig", str(kc),
            "--name", name, "--data-dir", str(tmp / name), "--run-dir", str(run),
            "--bridge", slot_bridge(slot), "--pod-cidr", slot_cidr(slot),
            "--port", str(free_port()), "--lease-seconds", "3", "--lease-interval", "1",
            "--vm-silent-boot-timeout", "15"]
    if server:
        args += ["--server", server]
    proc = subprocess.Popen(args, stdout=open(tmp / f"{name}.log", "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while platform.kubectl("get", "node", name, check=False).returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline, \
            (tmp / f"{name}.log").read_text()
        time.sleep(0.2)
    return proc, run


@pytest.fixture
def two_hosts(platform: Platform, tmp_path: Path):  # type: ignore[no-untyped-def]
    relay = Cuttable(platform.port)
    a, run_a = start_agent(platform, tmp_path, "ha-host-a", 4, f"https://127.0.0.1:{relay.port}")
    b, run_b = start_agent(platform, tmp_path, "ha-host-b", 5)
    yield relay, run_a, run_b
    relay.close()
    for proc in (a, b):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    cleanup_agent(tmp_path / "ha-host-a", slot_bridge(4), run_a)
    cleanup_agent(tmp_path / "ha-host-b", slot_bridge(5), run_b)
    for run in (run_a, run_b):
        shutil.rmtree(run, ignore_errors=True)
    for node in ("ha-host-a", "ha-host-b"):
        platform.kubectl("delete", "node", node, "--wait=false", check=False)


def qemu_of(run: Path, uid: str) -> int | None:
    try:
        pid = int((run / "vms" / uid / "qemu.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def test_a_cut_off_host_fences_and_its_vm_starts_elsewhere_once(
        platform: Platform, namespace: str, tiny_image: str, two_hosts) -> None:  # noqa: F811
    relay, run_a, run_b = two_hosts
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": f"{GROUP}/v1alpha3", "kind": "VirtualMachine",
        "metadata": {"name": "protected", "namespace": namespace,
                     "labels": {HOST: "ha-host-a"},  # placed by hand, on the host to cut off
                     "annotations": {"vmoperator.atoll.dev/restart-on-host-failure": "true"}},
        "spec": {"className": "best-effort-xsmall", "imageName": tiny_image,
                 "powerState": "PoweredOn",
                 "bootstrap": {"cloudInit": {"cloudConfig": {"runcmd": ["echo marker-ha"]}}}}}))
    vm = wait_until("the VM running on host a", lambda: (v := get_vm(platform, namespace,
                                                                       "protected")) and
                    (v.get("status") or {}).get("powerState") == "PoweredOn" and v, 120)
    uid = vm["metadata"]["uid"]
    old = wait_until("QEMU on host a", lambda: qemu_of(run_a, uid), 30)

    relay.cut()
    cut_at = time.monotonic()
    wait_until("host a to fence its VM", lambda: not alive(old), 20)
    fenced_at = time.monotonic() - cut_at
    moved = wait_until("the VM to move", lambda: (v := get_vm(platform, namespace, "protected"))
                       and v["metadata"]["labels"].get(HOST) != "ha-host-a" and v, 30)
    moved_at = time.monotonic() - cut_at
    assert fenced_at <= moved_at, "the VM moved before its old copy was off"
    assert moved["metadata"]["annotations"]["vmoperator.atoll.dev/restarted-from"] == "ha-host-a"
    new_host = moved["metadata"]["labels"][HOST]
    wait_until("the VM running again", lambda: (get_vm(platform, namespace, "protected")
                                                .get("status") or {}).get("powerState")
               == "PoweredOn" and qemu_count(uid) == 1, 60)
    running_at = time.monotonic() - cut_at
    print(f"\nHA: fenced after {fenced_at:.1f}s, moved to {new_host} after {moved_at:.1f}s, "
          f"QEMU running there after {running_at:.1f}s")
    assert moved_at < 15

    # the host comes back: it must not start its stale copy again, and it cleans up
    relay.restore()
    wait_until("host a to remove its copy", lambda: not (run_a / "vms" / uid).exists(), 30)
    assert qemu_count(uid) == 1
    vm = get_vm(platform, namespace, "protected")
    assert vm["metadata"]["labels"][HOST] == new_host


def qemu_count(uid: str) -> int:
    return len([p for p in pids_of(f"-uuid {uid}") if alive(p)])
