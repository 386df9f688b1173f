"""`atoll migrate-store`: a platform's state moves from SQLite to etcd, verified, and the
server on etcd serves the same objects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import kubectl_binary, wait_until
from tests.e2e.test_etcd_servers import Server
from tests.etcd import start_etcd


def kubectl(kc: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kubectl_binary(), "--kubeconfig", str(kc), *args],
                          capture_output=True, text=True, timeout=60)


def migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atoll.cli.main", "migrate-store", *args],
                          capture_output=True, text=True, timeout=120)


def test_sqlite_to_etcd(tmp_path: Path) -> None:
    db = tmp_path / "s1" / "state.db"
    first = Server(tmp_path, "s1", f"sqlite://{db}")
    ca = first.data / "pki" / "ca.crt"
    wait_until("the sqlite server", lambda: (first.data / "admin.kubeconfig").exists() and
               first.ready(ca), 60)
    kc = first.data / "admin.kubeconfig"
    kubectl(kc, "create", "namespace", "moved")
    for i in range(30):
        kubectl(kc, "-n", "moved", "create", "configmap", f"c{i}", f"--from-literal=i={i}")
    uid = json.loads(kubectl(kc, "-n", "moved", "get", "cm", "c7", "-o", "json").stdout
                     )["metadata"]["uid"]
    etcd = start_etcd(tmp_path, members=1)
    try:
        busy = migrate("--from", f"sqlite://{db}", "--to", etcd.url)
        assert busy.returncode != 0 and "stop it first" in busy.stderr, busy
        os.killpg(first.proc.pid, signal.SIGTERM)
        first.proc.wait(30)
        out = migrate("--from", f"sqlite://{db}", "--to", etcd.url)
        assert out.returncode == 0 and "verified" in out.stdout, out
        again = migrate("--from", f"sqlite://{db}", "--to", etcd.url)
        assert again.returncode != 0 and "--force" in again.stderr
        second = Server(tmp_path, "s2", etcd.url, ca_from=first.data)
        try:
            wait_until("the etcd server", lambda: second.ready(ca), 60)
            kc2 = tmp_path / "kc2"
            kc2.write_text(kc.read_text().replace(str(first.port), str(second.port)))
            cm = json.loads(kubectl(kc2, "-n", "moved", "get", "cm", "c7", "-o", "json").stdout)
            assert cm["metadata"]["uid"] == uid and cm["data"] == {"i": "7"}
            names = kubectl(kc2, "-n", "moved", "get", "cm", "-o", "name").stdout.split()
            assert len([n for n in names if "/c" in n]) == 30
        finally:
            second.kill()
    finally:
        etcd.stop()
