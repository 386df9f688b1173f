"""The Service dataplane on a real host: runc pods behind a Service reached by cluster IP from
the host and from pods (by DNS name too), both endpoints used, a pod reaching its own Service,
NodePort on the node's address, a refusal for a Service without endpoints, and the table
left clean when a Service goes."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import TEST_BRIDGE, TEST_NODE, Platform, wait_until

APP = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: front, namespace: {ns}}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{name: http, port: 8081, targetPort: http}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: {ns}}}
spec:
  rules:
  - host: web.{ns}.example.test
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}
  - host: other.{ns}.example.test
    http: {{paths: [{{path: /only, pathType: Exact, backend: {{service: {{name: empty, port: {{number: 80}}}}}}}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: {ns}}}
spec:
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
"""


def _json(platform: Platform, *args: str) -> dict:
    return json.loads(platform.kubectl(*args, "-o", "json").stdout)


def _curl(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "5", url], capture_output=True, text=True)


def _ready_endpoints(platform: Platform, ns: str) -> int:
    ep = _json(platform, "-n", ns, "get", "endpoints", "web")
    return sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])


@pytest.fixture
def app(platform: Platform, namespace: str) -> str:
    platform.kubectl("apply", "-f", "-", input=APP.format(ns=namespace))
    wait_until("both web pods ready", lambda: _ready_endpoints(platform, namespace) == 2, 90)
    wait_until("the client running", lambda: (_json(platform, "-n", namespace, "get", "pod",
                                                     "client").get("status") or {})
               .get("phase") == "Running", 60)
    return namespace


def test_cluster_ip_and_node_port_reach_both_endpoints(platform: Platform, app: str) -> None:
    ns = app
    svc = _json(platform, "-n", ns, "get", "service", "web")
    cip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    pods = {p["metadata"]["name"] for p in
            _json(platform, "-n", ns, "get", "pods", "-l", "app=web")["items"]}
    wait_until("the cluster IP answering", lambda: _curl(f"http://{cip}/").returncode == 0, 30)
    seen = {_curl(f"http://{cip}/").stdout.strip() for _ in range(24)}
    assert seen == pods, seen  # random choice: both in 24 tries but for a 2**-23 chance
    # from a pod
    assert _from_pod(platform, ns, "client", cip, 80) in pods
    # hairpin: a pod reaching its own Service
    one = sorted(pods)[0]
    assert _from_pod(platform, ns, one, cip, 80) in pods
    node = _json(platform, "get", "nodes")["items"][0]
    node_ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert _curl(f"http://{node_ip}:{node_port}/").stdout.strip() in pods
    # a LoadBalancer: the Ready hosts' addresses in its status, answering on its port
    lb = wait_until("the LoadBalancer's address", lambda: (
        _json(platform, "-n", ns, "get", "service", "front").get("status") or {})
        .get("loadBalancer", {}).get("ingress"), 30)
    assert lb == [{"ip": node_ip, "ipMode": "VIP"}]
    wait_until("the LoadBalancer answering",
               lambda: _curl(f"http://{node_ip}:8081/").stdout.strip() in pods, 30)
    shown = platform.kubectl("-n", ns, "get", "service", "front").stdout
    assert node_ip in shown and "<pending>" not in shown
    # a host port serves one LoadBalancer: a later one on the same port waits, pending
    platform.kubectl("-n", ns, "expose", "deployment", "web", "--name", "second",
                     "--type", "LoadBalancer", "--port", "8081", "--target-port", "8080")
    platform.kubectl("-n", ns, "expose", "deployment", "web", "--name", "third",
                     "--type", "LoadBalancer", "--port", "8082", "--target-port", "8080")
    wait_until("the third LoadBalancer's address", lambda: (
        _json(platform, "-n", ns, "get", "service", "third").get("status") or {})
        .get("loadBalancer", {}).get("ingress"), 30)
    assert not (_json(platform, "-n", ns, "get", "service", "second").get("status") or {}) \
        .get("loadBalancer", {}).get("ingress")
    assert _curl(f"http://{node_ip}:8081/").stdout.strip() in pods  # still the first's
    platform.kubectl("-n", ns, "delete", "service", "front")
    wait_until("the second LoadBalancer given the freed port", lambda: (
        _json(platform, "-n", ns, "get", "service", "second").get("status") or {})
        .get("loadBalancer", {}).get("ingress"), 30)


def test_an_ingress_routes_by_host_and_path(platform: Platform, app: str) -> None:
    ns = app
    pods = {p["metadata"]["name"] for p in
            _json(platform, "-n", ns, "get", "pods", "-l", "app=web")["items"]}
    addr = wait_until("the Ingress's address", lambda: (
        (_json(platform, "-n", ns, "get", "ingress", "web").get("status") or {})
        .get("loadBalancer") or {}).get("ingress"), 30)[0]["ip"]

    def get(host: str, path: str = "/", at: str = addr) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["curl", "-sS", "--max-time", "5", "-H", f"Host: {host}",
                               "-w", "\n%{http_code}", f"http://{at}{path}"],
                              capture_output=True, text=True)
    # hosts named after the namespace: earlier tests' Ingresses may still be going away
    wait_until("the router answering", lambda: get(f"web.{ns}.example.test").stdout
               .split("\n")[0] in pods, 30)
    # the rest asks this platform's router itself: every test platform on this host claims
    # the host's port 80 for its own router, and whichever table nftables hooks first wins
    router = _json(platform, "-n", "kube-system", "get", "endpointslice",
                   f"atoll-ingress-{TEST_NODE}")["endpoints"][0]["addresses"][0]
    answer = get(f"web.{ns}.example.test", at=router)
    assert answer.stdout.split("\n")[0] in pods, (answer.stdout, answer.stderr)
    assert get("nobody.example.test", at=router).stdout.endswith("\n404")  # no rule for it
    assert get(f"other.{ns}.example.test", "/only", at=router).stdout.endswith("\n503")
    assert get(f"other.{ns}.example.test", "/only/more", at=router).stdout.endswith("\n404")
    assert "atoll" in platform.kubectl("get", "ingressclass").stdout


def test_no_endpoints_is_refused_and_a_deleted_service_leaves_no_rule(platform: Platform,
                                                                      app: str) -> None:
    ns = app
    empty = _json(platform, "-n", ns, "get", "service", "empty")["spec"]["clusterIP"]
    wait_until("the empty Service programmed", lambda: empty in _ruleset(), 30)
    out = _curl(f"http://{empty}/")
    assert out.returncode == 7, out  # connection refused, not a time-out (28)
    platform.kubectl("-n", ns, "delete", "service", "empty")
    wait_until("its rule gone", lambda: empty not in _ruleset(), 30)


def _from_pod(platform: Platform, ns: str, pod: str, ip: str, port: int) -> str:
    """The body of GET / at ip:port, asked from inside ``pod`` (busybox wget; its ``-T``
    crashes in Debian's build, so kubectl's own time-out bounds it)."""
    return platform.kubectl("-n", ns, "exec", pod, "--", "wget", "-qO-",
                            f"http://{ip}:{port}/").stdout.strip()


def _ruleset() -> str:
    table = f"atoll_svc_{TEST_BRIDGE}".replace("-", "_")
    return subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                          text=True).stdout
