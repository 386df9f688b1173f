"""`kubectl port-forward` with the real kubectl: SPDY streams over a websocket, relayed by the
API server to the host agent, which connects inside the pod's network namespace."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Platform, free_port, kubectl_binary, wait_until

SERVE = ("mkdir -p /a /b && echo from-loopback > /a/index.html && echo from-any > /b/index.html"
         " && httpd -p 127.0.0.1:8080 -h /a && httpd -f -p 8081 -h /b")


def forward(platform: Platform, tmp: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    log = tmp / f"pf-{free_port()}.log"
    proc = subprocess.Popen([kubectl_binary(), "port-forward", *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, KUBECONFIG=str(platform.kubeconfig),
                                     KUBECACHEDIR=str(platform.cache_dir)))
    return proc, log


def get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        return r.read().decode().strip()


@pytest.fixture
def web(platform: Platform, namespace: str) -> str:
    platform.kubectl("-n", namespace, "create", "deployment", "web", "--image=busybox", "--",
                     "sh", "-c", SERVE)
    platform.kubectl("-n", namespace, "rollout", "status", "deploy/web", "--timeout=60s")
    return namespace


def test_forwards_several_ports_and_connections(platform: Platform, web: str,
                                                tmp_path: Path) -> None:
    a, b = free_port(), free_port()
    proc, log = forward(platform, tmp_path, "-n", web, "deploy/web", f"{a}:8080", f"{b}:8081")
    try:
        wait_until("kubectl to listen", lambda: log.read_text().count("Forwarding from") >= 2, 30)
        assert get(a) == "from-loopback"  # bound to the pod's loopback only: reached from inside
        assert get(b) == "from-any"
        with cf.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: get(a if i % 2 else b), range(16)))
        assert answers.count("from-loopback") == 8 and answers.count("from-any") == 8
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_a_closed_port_is_reported(platform: Platform, web: str, tmp_path: Path) -> None:
    port = free_port()
    proc, log = forward(platform, tmp_path, "-n", web, "deploy/web", f"{port}:9999")
    try:
        wait_until("kubectl to listen", lambda: "Forwarding from" in log.read_text(), 30)
        with pytest.raises(OSError):
            get(port)
        wait_until("kubectl to say why", lambda: "failed to connect to localhost:9999" in
                   log.read_text(), 15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_bad_targets(platform: Platform, namespace: str, tmp_path: Path) -> None:
    out = platform.kubectl("-n", namespace, "port-forward", "pod/ghost", "18099:80", check=False,
                           timeout=30)
    assert out.returncode != 0 and "not found" in out.stderr
    platform.kubectl("-n", namespace, "run", "stuck", "--image=does-not-exist:1")
    out = platform.kubectl("-n", namespace, "port-forward", "pod/stuck", "18098:80",
                           check=False, timeout=30)
    assert out.returncode != 0, out
    started = time.monotonic()
    out = platform.kubectl("-n", namespace, "port-forward", "pod/stuck", "18097:notaport",
                           check=False, timeout=30)
    assert out.returncode != 0 and time.monotonic() - started < 30


def test_the_official_python_client_forwards_over_plain_websockets(
        platform: Platform, k8s, web: str, namespace: str) -> None:
    """``kubernetes.stream.portforward`` speaks ``v4.channel.k8s.io`` (no SPDY): two ports
    at once, a loopback-only one among them, and a closed port's error on its channel."""
    from kubernetes.stream import portforward

    client, api = k8s
    v1 = client.CoreV1Api(api)
    pod = v1.list_namespaced_pod(namespace, label_selector="app=web").items[0].metadata.name
    pf = portforward(v1.connect_get_namespaced_pod_portforward, pod, namespace,
                     ports="8080,8081,9")
    try:
        socks = {port: pf.socket(port) for port in (8080, 8081)}
        for sock in socks.values():
            sock.setblocking(True)
            sock.settimeout(20)
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        # the session ends when every port's connection has: each socket then reads EOF
        for port, body in ((8080, "from-loopback"), (8081, "from-any")):
            data = b""
            while chunk := socks[port].recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.") and body.encode() in data
        assert "failed to connect to localhost:9" in (pf.error(9) or "")
    finally:
        pf.close()
