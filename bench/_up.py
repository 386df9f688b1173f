"""`atoll up` on a scratch data dir with its own node, bridge and pod range, for benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.conftest import cleanup_agent, free_port


@contextmanager
def platform(work: Path, node: str, bridge: str, pod_cidr: str) -> Iterator[tuple[Path, int]]:
    """(data dir, API port) of a running platform; stopped and cleaned up on exit."""
    data = work / "atoll"
    port = free_port()
    log = open(work / "up.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli.main", "--log-level", "WARNING",
                             "up", "--data-dir", str(data), "--port", str(port),
                             f"--agent-arg=--name={node}", f"--agent-arg=--bridge={bridge}",
                             f"--agent-arg=--pod-cidr={pod_cidr}",
                             f"--agent-arg=--port={free_port()}",
                             f"--agent-arg=--run-dir={work / 'run'}"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Atoll is ready" not in (work / "up.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, "atoll up failed"
            time.sleep(0.2)
        yield data, port
    finally:
        os.killpg(proc.pid, 15)
        proc.wait()
        cleanup_agent(data / "agent", bridge, work / "run")


@contextmanager
def api_server(data: Path) -> Iterator[int]:
    """`atoll server` alone on a scratch data dir, in its own process; yields its port once
    it answers /readyz."""
    import ssl
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli.main", "--log-level", "WARNING",
                             "server", "--data-dir", str(data), "--port", str(port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "atoll server failed"
            if (data / "admin.kubeconfig").exists():
                ctx = ssl.create_default_context(cafile=str(data / "pki" / "ca.crt"))
                try:
                    with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx,
                                                timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait()
