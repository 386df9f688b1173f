"""The Service dataplane on a real host: runc pods behind a Service reached by cluster IP from
the host and from pods (by DNS name too), both endpoints used, a pod reaching its own Service,
NodePort on the node's address, a refusal for a Service without endpoints, and the table
left clean when a Service goes."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid

import pytest

from tests.conftest import TEST_BRIDGE, TEST_NODE, TEST_SLOT, Platform, wait_until

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
    # this platform's router itself: every test platform on this host claims the host's
    # port 80 for its own router, and whichever table nftables hooks first wins
    router = _json(platform, "-n", "kube-system", "get", "endpointslice",
                   f"atoll-ingress-{TEST_NODE}")["endpoints"][0]["addresses"][0]
    # hosts named after the namespace: earlier tests' Ingresses may still be going away
    wait_until("the router answering", lambda: get(f"web.{ns}.example.test", at=router)
               .stdout.split("\n")[0] in pods, 30)
    if _only_platform_here():  # then the Ingress's own address reaches this router too
        answer = get(f"web.{ns}.example.test")
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


def _only_platform_here() -> bool:
    """Whether this platform's Service table is the only one on the host."""
    tables = subprocess.run(["nft", "list", "tables", "ip"], capture_output=True,
                            text=True).stdout
    return tables.count("atoll_svc_") == 1


def _ruleset() -> str:
    table = f"atoll_svc_{TEST_BRIDGE}".replace("-", "_")
    return subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                          text=True).stdout


def test_load_balancer_source_ranges_drop_other_sources(platform: Platform, app: str) -> None:
    """The host (192.0.2.2) is kept off a LoadBalancer whose ranges leave it out, and reaches
    one without ranges and one whose range holds it; a range that is no CIDR is a 422."""
    ns = app
    base = 18000 + 10 * TEST_SLOT  # every test platform on this machine shares 192.0.2.2
    for name, port, ranges in (("open", base, None), ("closed", base + 1, ["203.0.113.0/24"]),
                               ("home", base + 2, ["192.0.2.0/24"])):
        spec = {"type": "LoadBalancer", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": port, "targetPort": "http"}]}
        if ranges:
            spec["loadBalancerSourceRanges"] = ranges
        platform.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}))
    lb = {name: wait_until(f"{name}'s address", lambda: ((_json(
        platform, "-n", ns, "get", "service", name).get("status") or {}).get("loadBalancer")
        or {}).get("ingress"), 30)[0]["ip"] for name in ("open", "closed", "home")}
    wait_until("open answering", lambda: _curl(f"http://{lb['open']}:{base}/").returncode == 0)
    wait_until("home answering", lambda: _curl(f"http://{lb['home']}:{base + 2}/").returncode
               == 0)
    wait_until("closed's firewall programmed",
               lambda: f"{lb['closed']} . tcp . {base + 1} : goto firewall-" in _ruleset())
    out = subprocess.run(["curl", "-sS", "--max-time", "2", f"http://{lb['closed']}:{base + 1}/"],
                         capture_output=True, text=True)
    assert out.returncode == 28, out  # dropped: a time-out, not a refusal
    closed_ip = _json(platform, "-n", ns, "get", "service", "closed")["spec"]["clusterIP"]
    assert _curl(f"http://{closed_ip}:{base + 1}/").returncode == 0  # not for cluster IPs
    bad = platform.kubectl("-n", ns, "patch", "service", "closed", "--type=merge", "-p",
                           '{"spec":{"loadBalancerSourceRanges":["10.0.0.0/8","bogus"]}}',
                           check=False)
    assert bad.returncode != 0 and "spec.loadBalancerSourceRanges[1]" in bad.stderr, bad.stderr
    assert "must be a valid CIDR" in bad.stderr


def test_a_deleted_namespace_leaves_no_rule_element_or_conntrack_entry(platform: Platform
                                                                       ) -> None:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    platform.kubectl("create", "namespace", ns)
    wait_until("the namespace filled in", lambda: platform.kubectl(
        "-n", ns, "get", "serviceaccount/default", check=False).returncode == 0)
    platform.kubectl("apply", "-f", "-", input=f"""apiVersion: v1
kind: Pod
metadata: {{name: udp, namespace: {ns}, labels: {{app: udp}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: udp, namespace: {ns}}}
spec:
  type: NodePort
  selector: {{app: udp}}
  ports: [{{name: u, port: 5353, protocol: UDP}}, {{name: t, port: 80, protocol: TCP}}]
""")
    cip = _json(platform, "-n", ns, "get", "service", "udp")["spec"]["clusterIP"]
    wait_until("the endpoint programmed", lambda: f"{cip} . udp . 5353 : goto service-"
               in _ruleset(), 90)

    def entries() -> str:
        return subprocess.run(["conntrack", "-L", "-p", "udp", "--orig-dst", cip],
                              capture_output=True, text=True).stdout

    def send() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", (cip, 5353))
        return entries()

    wait_until("a UDP conntrack entry through the Service", lambda: cip in send(), 10)
    platform.kubectl("delete", "namespace", ns, "--wait=false")
    wait_until("the Service's rules and elements gone", lambda: cip not in _ruleset()
               and f"{ns}/" not in _ruleset(), 60)
    wait_until("its conntrack entry gone", lambda: cip not in entries(), 10)
