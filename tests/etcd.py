"""A real etcd for tests: one member or three, on free loopback ports, in a tmp dir."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port


@dataclass
class Etcd:
    procs: list[subprocess.Popen] = field(default_factory=list)
    clients: list[int] = field(default_factory=list)
    work: Path = Path(".")

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(f"127.0.0.1:{p}" for p in self.clients)

    def restart(self, i: int) -> None:
        """Start member ``i`` again on its data dir: it rejoins and catches up."""
        p = self.procs[i]
        if p.poll() is None:
            return
        self.procs[i] = subprocess.Popen(p.args, stdout=open(self.work / f"etcd{i}.again.log",
                                                                "wb"),
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def healthy(self, i: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.clients[i]}/health",
                                        timeout=2) as r:
                return b'"true"' in r.read()
        except OSError:
            return False

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def start_etcd(work: Path, members: int = 1) -> Etcd:
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("etcd is not installed (Debian: etcd-server)")
    etcd = Etcd(work=work)
    peers = [free_port() for _ in range(members)]
    etcd.clients = [free_port() for _ in range(members)]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
    for i in range(members):
        etcd.procs.append(subprocess.Popen(
            [binary, "--name", f"m{i}", "--data-dir", str(work / f"etcd{i}"),
             "--listen-client-urls", f"http://127.0.0.1:{etcd.clients[i]}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd.clients[i]}",
             "--listen-peer-urls", f"http://127.0.0.1:{peers[i]}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peers[i]}",
             "--initial-cluster", cluster, "--initial-cluster-state", "new"],
            stdout=open(work / f"etcd{i}.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if etcd.healthy(0):
            return etcd
        time.sleep(0.2)
    etcd.stop()
    raise RuntimeError("etcd did not become healthy")


def count_keys(etcd: Etcd, member: int, prefix: str) -> int:
    """How many keys one member (serializable read: its own copy) holds under ``prefix``."""
    import base64
    import json

    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps({"key": base64.b64encode(prefix.encode()).decode(),
                       "range_end": base64.b64encode(end.encode()).decode(),
                       "count_only": True, "serializable": True}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{etcd.clients[member]}/v3/kv/range", data=body,
                method="POST"), timeout=5) as r:
            return int(json.loads(r.read()).get("count", 0))
    except OSError:
        return -1

