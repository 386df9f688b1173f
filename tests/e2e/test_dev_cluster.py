"""`atoll dev cluster`: hosts as network namespaces, each with its own agent and address;
pods on different hosts reach each other, by pod IP and by a Service's DNS name, until a
NetworkPolicy on the server's host closes it; stopping the harness removes every host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import TEST_SLOT, free_port, kubectl_binary

PREFIX = f"adt{TEST_SLOT}-"


def test_two_hosts_pods_talk_across_hosts_and_teardown(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    log = tmp_path / "dev.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "atoll.cli.main", "dev", "cluster", "--hosts", "2",
         "--data-dir", str(data), "--port", str(free_port()),
         "--subnet", f"172.30.{100 + TEST_SLOT}.0/24", "--bridge", f"atolldt{TEST_SLOT}",
         "--prefix", PREFIX, "--pod-range", f"10.{230 + TEST_SLOT}.0.0/16",
         "--lease-seconds", "3", "--lease-interval", "1"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    env = dict(os.environ, KUBECONFIG=str(data / "server-1" / "admin.kubeconfig"),
               KUBECACHEDIR=str(tmp_path / "cache"))

    def k(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), *args], input=input, capture_output=True,
                              text=True, env=env, timeout=60)

    def wait(what: str, probe, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            if value := probe():
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")

    try:
        wait("the harness", lambda: b"dev cluster is ready" in log.read_bytes())
        hosts = [f"{PREFIX}host-1", f"{PREFIX}host-2"]

        def ready_nodes() -> list[str]:
            out = k("get", "nodes", "-o", "json")
            if out.returncode:
                return []
            return [n["metadata"]["name"] for n in json.loads(out.stdout)["items"]
                    if any(c["type"] == "Ready" and c["status"] == "True"
                           for c in (n.get("status") or {}).get("conditions", []))]
        wait("both hosts Ready", lambda: sorted(ready_nodes()) == hosts)
        nodes = json.loads(k("get", "nodes", "-o", "json").stdout)["items"]
        addresses = {n["status"]["addresses"][0]["address"] for n in nodes}
        assert addresses == {f"172.30.{100 + TEST_SLOT}.11", f"172.30.{100 + TEST_SLOT}.12"}
        for pod in (
                {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                 "spec": {"nodeName": hosts[0], "containers": [{
                     "name": "c", "image": "busybox", "command": [
                         "sh", "-c", "mkdir -p /w && echo across-hosts > /w/index.html && "
                                     "httpd -f -p 8080 -h /w"]}]}},
                {"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "client", "namespace": "default"},
                 "spec": {"nodeName": hosts[1], "containers": [{
                     "name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}):
            out = k("apply", "-f", "-", input=json.dumps(pod))
            assert out.returncode == 0, out.stderr

        def running(name: str) -> str:
            out = k("get", "pod", name, "-o", "json")
            pod = json.loads(out.stdout) if out.returncode == 0 else {}
            st = pod.get("status") or {}
            return st.get("podIP", "") if st.get("phase") == "Running" else ""
        ip = wait("the web pod", lambda: running("web"))
        wait("the client pod", lambda: running("client"))
        got = wait("an answer across hosts", lambda: (out := k(
            "exec", "client", "--", "wget", "-qO-", f"http://{ip}:8080/")).returncode == 0
            and out.stdout)
        assert got.strip() == "across-hosts"

        # a Service by its DNS name, asked on the other host (its own DNS and dataplane)
        service = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"selector": {"app": "web"},
                            "ports": [{"port": 80, "targetPort": 8080}]}}
        assert k("apply", "-f", "-", input=json.dumps(service)).returncode == 0
        name = "http://web.default.svc.cluster.local/"
        got = wait("the Service by name across hosts", lambda: (out := k(
            "exec", "client", "--", "timeout", "5", "wget", "-qO-", name)).returncode == 0
            and out.stdout)
        assert got.strip() == "across-hosts"
        # a default-deny policy on the web pod's host closes it to the other host's pods
        deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny", "namespace": "default"},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                         "policyTypes": ["Ingress"]}}
        assert k("apply", "-f", "-", input=json.dumps(deny)).returncode == 0
        wait("the policy enforced across hosts", lambda: k(
            "exec", "client", "--", "timeout", "3", "wget", "-qO-",
            f"http://{ip}:8080/").returncode != 0)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=90)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert PREFIX not in netns
    assert subprocess.run(["ip", "link", "show", f"atolldt{TEST_SLOT}"],
                          capture_output=True).returncode != 0
