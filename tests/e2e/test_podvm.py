"""A pod with ``runtimeClassName: atoll-vm`` runs in its own QEMU microvm (TCG here)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from atoll.agent.podvm.runtime import unavailable
from atoll.agent.podvm.vm import MARKER
from tests.conftest import (TEST_NODE, Platform, kill_and_await_restart, kubectl_binary,
                            wait_until)
from tests.e2e.test_pods import phase, pod_yaml, wait_node, wait_pod

pytestmark = pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "")
VM = "  runtimeClassName: atoll-vm"


def qemu_of(uid: str) -> bool:
    return subprocess.run(["pgrep", "-f", MARKER + uid], capture_output=True).returncode == 0


def qemus_of(uid: str) -> int:
    out = subprocess.run(["pgrep", "-f", MARKER + uid], capture_output=True, text=True).stdout
    return len(out.split())


def test_pod_vm_runs_busybox_with_its_own_kernel(platform: Platform, namespace: str) -> None:
    wait_node(platform)
    node = json.loads(platform.kubectl("get", "node", TEST_NODE, "-o", "json").stdout)
    assert "atoll-vm" in [h.get("name") for h in node["status"].get("runtimeHandlers") or []]
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "vm-once", "uname -r; cat /proc/sys/kernel/random/boot_id", extra=VM))
    pod = wait_pod(platform, namespace, "vm-once", phase("Succeeded"), timeout=180)
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0
    release, boot_id = platform.kubectl("logs", "-n", namespace, "vm-once").stdout.split()
    assert release.endswith("-cloud-amd64")
    assert boot_id != Path("/proc/sys/kernel/random/boot_id").read_text().strip()

    # a long-running pod-VM: Running, an exec readiness probe through the guest agent, then
    # deleted with its grace period; nothing of its VM is left
    probe = ("    readinessProbe:\n      exec: {command: [cat, /tmp/ready]}\n"
             "      periodSeconds: 1\n      timeoutSeconds: 20")
    t0 = time.monotonic()
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "vm-web", "trap 'echo stopping; exit 0' TERM; touch /tmp/ready; echo up; "
        "while :; do sleep 1; done", restart="Always", extra=VM, container_extra=probe))
    pod = wait_pod(platform, namespace, "vm-web", lambda p: "running" in (
        ((p.get("status") or {}).get("containerStatuses") or [{}])[0].get("state") or {}),
        timeout=180)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    running_after = time.monotonic() - t0
    uid = pod["metadata"]["uid"]
    assert qemu_of(uid)
    wait_pod(platform, namespace, "vm-web", lambda p: any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (p.get("status") or {}).get("conditions") or []), timeout=120)
    assert "up" in platform.kubectl("logs", "-n", namespace, "vm-web").stdout
    # the pod IP lives in the guest: the host reaches it over the pod bridge and the tc redirect
    ip = wait_pod(platform, namespace, "vm-web", lambda p: bool(p["status"].get("podIP")))[
        "status"]["podIP"]
    wait_until(f"the pod-VM answers on {ip}", lambda: subprocess.run(
        ["busybox", "ping", "-c", "1", "-W", "2", ip], capture_output=True).returncode == 0,
        timeout=30)
    # kubectl exec (no terminal) goes through the guest agent, exit codes included
    out = platform.kubectl("exec", "-n", namespace, "vm-web", "--", "uname", "-r").stdout
    assert out.strip() == release
    failed = platform.kubectl("exec", "-n", namespace, "vm-web", "--", "sh", "-c",
                              "echo err >&2; exit 3", check=False)
    assert failed.returncode == 3 and "err" in failed.stderr
    # an agent killed with -9 leaves the VM to its successor, which takes it over
    # (tests/e2e/test_podvm_restart.py checks how): never two QEMUs for one pod
    kill_and_await_restart(f"agent --kubeconfig {platform.data_dir / 'agent.kubeconfig'}")
    wait_pod(platform, namespace, "vm-web", lambda p: any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (p.get("status") or {}).get("conditions") or []), timeout=180)
    wait_until("one QEMU for the pod", lambda: qemus_of(uid) == 1, timeout=60)
    platform.kubectl("delete", "pod", "-n", namespace, "vm-web", "--wait=true", timeout=120)
    wait_until("the pod's QEMU gone", lambda: not qemu_of(uid), timeout=30)
    print(f"pod-VM create->Running {running_after:.1f} s (TCG)")  # shown with -s


def test_port_forward_is_dialled_inside_the_guest(platform: Platform, k8s, namespace: str,
                                                   tmp_path: Path) -> None:
    """A page served on the guest's loopback only (unreachable at the pod IP, where Kata's
    port-forward dials) is fetched through real ``kubectl port-forward`` and curl; ``kubectl
    attach`` shows the container's output from then on."""
    wait_node(platform)
    platform.kubectl("apply", "-f", "-", input=pod_yaml(
        namespace, "vm-pf", "trap 'exit 0' TERM; mkdir -p /www && echo from-the-guest-loopback "
        "> /www/index.html && httpd -p 127.0.0.1:8080 -h /www && "
        "while :; do echo tick; sleep 1; done", restart="Always", extra=VM))
    wait_pod(platform, namespace, "vm-pf", phase("Running"), timeout=180)
    # kubectl ends a port-forward whose connection fails: start it once httpd listens
    wait_until("httpd listening in the guest", lambda: "from-the-guest-loopback" in
               platform.kubectl("exec", "-n", namespace, "vm-pf", "--", "wget", "-q", "-O-",
                                "http://127.0.0.1:8080/index.html", check=False).stdout,
               timeout=60, interval=0.5)
    log = tmp_path / "pf.log"
    proc = subprocess.Popen([kubectl_binary(), "-n", namespace, "port-forward", "pod/vm-pf",
                             "0:8080"], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True,
                            env=dict(os.environ, KUBECONFIG=str(platform.kubeconfig),
                                     KUBECACHEDIR=str(platform.cache_dir)))
    try:
        wait_until("kubectl to listen", lambda: "Forwarding from 127.0.0.1:" in log.read_text(),
                   30)
        local = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", log.read_text()).group(1)

        def fetch() -> str:
            return subprocess.run(["curl", "-sS", "--max-time", "20",
                                   f"http://127.0.0.1:{local}/index.html"],
                                  capture_output=True, text=True).stdout
        assert "from-the-guest-loopback" in fetch()
        assert "from-the-guest-loopback" in fetch()  # a second connection in the session
        ip = wait_pod(platform, namespace, "vm-pf", lambda p: bool(p["status"].get("podIP")))[
            "status"]["podIP"]
        direct = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://{ip}:8080/"],
                                capture_output=True, text=True)
        assert direct.returncode != 0 and "from-the-guest" not in direct.stdout
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    # the official clients' v4.channel.k8s.io form, a closed port's error on its channel
    from kubernetes.stream import portforward
    client, api = k8s
    v1 = client.CoreV1Api(api)
    pf = portforward(v1.connect_get_namespaced_pod_portforward, "vm-pf", namespace,
                     ports="8080,9")
    try:
        sock = pf.socket(8080)
        sock.setblocking(True)
        sock.settimeout(20)
        sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert b"from-the-guest-loopback" in data
        assert "failed to connect to localhost:9" in (pf.error(9) or "")
    finally:
        pf.close()
    attached = tmp_path / "attach.log"
    proc = subprocess.Popen([kubectl_binary(), "-n", namespace, "attach", "vm-pf"],
                            stdout=open(attached, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True,
                            env=dict(os.environ, KUBECONFIG=str(platform.kubeconfig),
                                     KUBECACHEDIR=str(platform.cache_dir)))
    try:
        wait_until("output through attach", lambda: "tick" in attached.read_text(), 30)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    refused = platform.kubectl("-n", namespace, "attach", "-i", "vm-pf", input="",
                               check=False, timeout=60)
    assert refused.returncode != 0 and "pod-VM" in refused.stderr
    platform.kubectl("delete", "pod", "-n", namespace, "vm-pf", "--wait=true", timeout=120)
