"""`atoll dev cluster` for tests: hosts as network namespaces, one harness per test module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from tests.conftest import TEST_SLOT, free_port, kubectl_binary

T = TypeVar("T")


class DevCluster:
    def __init__(self, tmp: Path, hosts: int, prefix: str) -> None:
        self.tmp, self.hosts, self.prefix = tmp, hosts, prefix
        self.data = tmp / "dev"
        self.log = tmp / "dev.log"
        self.proc: subprocess.Popen | None = None
        self.env = dict(os.environ, KUBECONFIG=str(self.data / "server-1" / "admin.kubeconfig"),
                        KUBECACHEDIR=str(tmp / "cache"))

    @property
    def kubeconfig(self) -> str:
        return self.env["KUBECONFIG"]

    def host(self, i: int) -> str:
        return f"{self.prefix}host-{i}"

    def netns(self, i: int) -> str:
        return f"{self.prefix}h{i}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atoll.cli.main", "dev", "cluster", "--hosts", str(self.hosts),
             "--data-dir", str(self.data), "--port", str(free_port()),
             "--subnet", f"172.30.{120 + TEST_SLOT}.0/24", "--bridge", f"atollmg{TEST_SLOT}",
             "--prefix", self.prefix, "--pod-range", f"10.{210 + TEST_SLOT}.0.0/16",
             "--lease-seconds", "3", "--lease-interval", "1"],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.wait("the harness", lambda: b"dev cluster is ready" in self.log.read_bytes(), 120)
        self.wait("every host Ready", lambda: len(self.ready_nodes()) == self.hosts, 120)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([kubectl_binary(), *args], input=input, capture_output=True,
                             text=True, env=self.env, timeout=120)
        if check and out.returncode:
            raise AssertionError(f"kubectl {' '.join(args)}: {out.stderr}")
        return out

    def kubectl_argv(self) -> list[str]:
        return [kubectl_binary()]

    def atoll(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "atoll.cli.main", *args,
                               "--kubeconfig", self.kubeconfig], capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def get(self, *args: str) -> dict[str, Any]:
        out = self.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def ready_nodes(self) -> list[str]:
        return [n["metadata"]["name"] for n in self.get("nodes").get("items", [])
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (n.get("status") or {}).get("conditions", []))]

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float = 90) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            if value := probe():
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}:\n{self.tail()}")

    def tail(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def in_host(self, i: int, argv: list[str], **kw: Any) -> subprocess.Popen:
        """A process in host ``i``'s network namespace (as a client living there)."""
        return subprocess.Popen(["nsenter", f"--net=/run/netns/{self.netns(i)}", "--", *argv],
                                **kw)
