"""The controller manager as a process: one watch per resource, and its work-queue metrics.

An API server with no controllers and no agent, then `atoll controller-manager` on its own, so
every watch the API server counts is the manager's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import Platform, free_port, start_platform, stop_platform, wait_until

WATCH = re.compile(r'^apiserver_longrunning_requests\{verb="WATCH",group="([^"]*)",'
                   r'resource="([^"]*)"\} (\d+)$', re.M)
#: resources the manager needs whatever the garbage collector discovers
NEEDED = {("", "pods"), ("", "nodes"), ("", "namespaces"), ("apps", "replicasets"),
          ("apps", "deployments"), ("apps", "daemonsets"), ("apps", "statefulsets"),
          ("batch", "jobs"), ("", "resourcequotas"), ("vmoperator.vmware.com", "virtualmachines")}


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, str]]:
    base = tmp_path_factory.mktemp("atoll-cm")
    platform = start_platform(base / "data", None, "--no-controllers", "--no-agent")
    port = free_port()
    log = open(base / "manager.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "atoll.cli.main", "controller-manager",
                             "--kubeconfig", str(platform.kubeconfig), "--no-leader-elect",
                             "--metrics-bind-address", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    yield platform, f"http://127.0.0.1:{port}/metrics"
    proc.terminate()
    proc.wait(timeout=20)
    stop_platform(platform)


def api_watches(platform: Platform) -> dict[tuple[str, str], int]:
    text = platform.kubectl("get", "--raw", "/metrics").stdout
    return {(g, r): int(n) for g, r, n in WATCH.findall(text)}


def manager_metrics(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


def pods(namespace: str, n: int) -> str:
    """``n`` pods as one multi-document stream (kubectl applies each document)."""
    return "\n---\n".join(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i:03d}", "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}) for i in range(n))


def test_one_watch_per_resource_with_100_pods(manager: tuple[Platform, str]) -> None:
    platform, _ = manager
    platform.kubectl("create", "namespace", "watched")
    platform.kubectl("apply", "-f", "-", input=pods("watched", 100), timeout=120)
    watches = wait_until("the manager watching what it needs",
                         lambda: (w := api_watches(platform)) and NEEDED <= set(w) and w, 60, 0.2)
    print("\nwatches held by the controller manager (group/resource: count):")
    for (group, resource), n in sorted(watches.items()):
        print(f"  {group or 'core'}/{resource}: {n}")
    assert {k: n for k, n in watches.items() if n != 1} == {}


def test_manager_serves_work_queue_metrics(manager: tuple[Platform, str]) -> None:
    platform, url = manager
    platform.kubectl("create", "namespace", "metered")
    platform.kubectl("-n", "metered", "create", "deployment", "web", "--image=busybox",
                     "--replicas=2")
    text = wait_until("the deployment controller's adds in /metrics", lambda: (
        t := manager_metrics(url)) and re.search(
            r'^workqueue_adds_total\{name="deployment"\} [1-9]', t, re.M) and t, 60, 0.2)
    for family in ("workqueue_depth", "workqueue_retries_total",
                   "workqueue_work_duration_seconds_bucket", "controller_reconcile_total"):
        assert f"\n{family}{{" in text, family
