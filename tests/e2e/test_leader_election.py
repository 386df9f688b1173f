"""Several controller managers, one leader: only the Lease holder acts; a successor takes over
when the leader dies, within the lease duration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Platform, start_platform, stop_platform, wait_until

LEASE = ("--leader-elect-lease-duration", "3", "--leader-elect-renew-deadline", "2",
         "--leader-elect-retry-period", "0.5")


@pytest.fixture
def bare_platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    """An API server alone: the test brings its own controller managers."""
    p = start_platform(tmp_path_factory.mktemp("le") / "data", None, "--no-controllers",
                       "--no-agent")
    yield p
    stop_platform(p)


def manager(platform: Platform, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "atoll.cli.main", "controller-manager",
                             "--kubeconfig", str(platform.kubeconfig), *LEASE],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def holder(platform: Platform) -> str:
    out = platform.kubectl("-n", "kube-system", "get", "lease", "atoll-controller-manager",
                           "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def replicaset(platform: Platform, ns: str, name: str, replicas: int) -> None:
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"rs": name}},
                 "template": {"metadata": {"labels": {"rs": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))


def pods_of(platform: Platform, ns: str, name: str) -> int:
    out = platform.kubectl("-n", ns, "get", "pods", "-l", f"rs={name}", "-o", "name")
    return len(out.stdout.split())


def test_one_leader_acts_and_a_successor_takes_over(bare_platform: Platform,
                                                    tmp_path: Path) -> None:
    p = bare_platform
    first = manager(p, tmp_path / "a.log")
    try:
        leader = wait_until("a leader", lambda: holder(p))
        second = manager(p, tmp_path / "b.log")
        try:
            p.kubectl("create", "namespace", "le")
            replicaset(p, "le", "one", 5)
            wait_until("five pods", lambda: pods_of(p, "le", "one") == 5)
            wait_until("the rs status", lambda: json.loads(p.kubectl(
                "-n", "le", "get", "rs", "one", "-o", "json").stdout).get("status", {}).get(
                "replicas") == 5)
            assert pods_of(p, "le", "one") == 5
            assert holder(p) == leader
            # the candidate started no controllers (the scheduler says so when it starts)
            assert "scheduler: started" not in (tmp_path / "b.log").read_text()
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            killed = time.monotonic()
            new = wait_until("a new leader", lambda: (h := holder(p)) != leader and h, timeout=15)
            took = time.monotonic() - killed
            assert new and took < 3 + 2, f"takeover took {took:.1f}s"
            replicaset(p, "le", "two", 3)
            wait_until("the successor acting", lambda: pods_of(p, "le", "two") == 3)
            assert pods_of(p, "le", "one") == 5
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(20)
        # a clean stop gives the lease up at once
        wait_until("a released lease", lambda: holder(p) == "", timeout=5)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
