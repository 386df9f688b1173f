"""Two agents on one machine: a host that dies loses its pods to the other host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (TEST_NODE, Platform, cleanup_agent, free_port, slot_bridge, slot_cidr,
                            wait_until)

SECOND = "atoll-second-node"
#: the second agent's Lease (seconds) and renewal interval; bench it with the defaults (8, 2):
#: ATOLL_FAILOVER_LEASE=8 ATOLL_FAILOVER_RENEW=2 pytest -s tests/e2e/test_failover.py
LEASE = os.environ.get("ATOLL_FAILOVER_LEASE", "3")
RENEW = os.environ.get("ATOLL_FAILOVER_RENEW", "1")
BRIDGE = slot_bridge(3)


@pytest.fixture
def second_agent(platform: Platform, tmp_path: Path):  # type: ignore[no-untyped-def]
    data, run = tmp_path / "agent2", tmp_path / "run2"
    log = open(tmp_path / "agent2.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "atoll.cli.main", "agent", "--kubeconfig", str(platform.kubeconfig),
         "--name", SECOND, "--data-dir", str(data), "--run-dir", str(run), "--bridge", BRIDGE,
         "--pod-cidr", slot_cidr(3), "--port", str(free_port()), "--lease-seconds", LEASE,
         "--lease-interval", RENEW, "--label", "failover-test=yes"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while platform.kubectl("get", "node", SECOND, check=False).returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline, \
            (tmp_path / "agent2.log").read_text()
        time.sleep(0.2)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    cleanup_agent(data, BRIDGE, run)
    platform.kubectl("delete", "node", SECOND, "--wait=false", check=False)


def test_pods_of_a_dead_host_are_replaced_on_the_other(platform: Platform, namespace: str,
                                                       second_agent) -> None:  # type: ignore[no-untyped-def]
    manifest = f"""apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        nodeAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            preference: {{matchExpressions: [{{key: failover-test, operator: In, values: ["yes"]}}]}}
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {{key: kubernetes.io/hostname, operator: In, values: [{TEST_NODE}, {SECOND}]}}
      containers:
      - {{name: c, image: busybox, command: [sleep, "3600"]}}
"""
    platform.kubectl("apply", "-f", "-", input=manifest)

    def running() -> list[dict]:
        pods = json.loads(platform.kubectl("get", "pods", "-n", namespace, "-l", "app=web",
                                           "-o", "json").stdout)["items"]
        return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")]

    deadline = time.monotonic() + 60
    while not running():
        assert time.monotonic() < deadline, "the ReplicaSet's pod never ran"
        time.sleep(0.2)
    first = running()[0]
    assert first["spec"]["nodeName"] == SECOND
    # the second host dies: its agent stops renewing its Lease
    os.killpg(second_agent.pid, signal.SIGKILL)
    failed_at = time.monotonic()
    deadline = failed_at + 60
    while True:
        replacements = [p for p in running() if p["spec"]["nodeName"] == TEST_NODE]
        if replacements:
            break
        assert time.monotonic() < deadline, "no replacement pod on the healthy host"
        time.sleep(0.2)
    took = time.monotonic() - failed_at
    print(f"replacement running {took:.1f} s after the host died (lease {LEASE} s, renewed "
          f"every {RENEW} s)")
    assert took < 30, took  # lease 3 s + default toleration 3 s + scheduling and start
    node = json.loads(platform.kubectl("get", "node", SECOND, "-o", "json").stdout)
    assert any(t["key"] == "node.kubernetes.io/unreachable" for t in node["spec"]["taints"])

    # the dead host's own servers (cluster DNS, the Ingress router) leave their Services
    def host_slice() -> dict | None:
        got = platform.kubectl("-n", "kube-system", "get", "endpointslice",
                               f"atoll-ingress-{SECOND}", "-o", "json", check=False)
        return json.loads(got.stdout) if got.returncode == 0 else None

    wait_until("the dead host's router slice not ready", lambda: (host_slice() or {}).get(
        "endpoints", [{}])[0].get("conditions", {}).get("ready") is False)
    platform.kubectl("delete", "node", SECOND)
    wait_until("the removed host's slices gone", lambda: host_slice() is None)
