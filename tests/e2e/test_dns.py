"""Cluster DNS from inside real runc pods: the host agent's server answers Services (cluster
IP, headless endpoints by hostname, SRV), pods by address, reverse names of cluster IPs and
headless endpoints, the search path, and refuses names that do not exist; the pod's
resolv.conf is kubelet's."""

from __future__ import annotations

import ipaddress
import json

import pytest

from tests.conftest import TEST_NODE, Platform, wait_until

PODS = """apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: db-0, namespace: {ns}, labels: {{app: db}}}}
spec:
  hostname: db-0
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: busybox, command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {ns}}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: sql, port: 5432}}]
---
apiVersion: v1
kind: Service
metadata: {{name: docs, namespace: {ns}}}
spec:
  type: ExternalName
  externalName: docs.example.org
"""


def _json(platform: Platform, *args: str) -> dict:
    return json.loads(platform.kubectl(*args, "-o", "json").stdout)


def _running(platform: Platform, namespace: str, name: str) -> bool:
    pod = _json(platform, "-n", namespace, "get", "pod", name)
    return (pod.get("status") or {}).get("phase") == "Running"


@pytest.fixture
def pods(platform: Platform, namespace: str) -> str:
    platform.kubectl("apply", "-f", "-", input=PODS.format(ns=namespace))
    for name in ("client", "db-0"):
        wait_until(f"pod {name} running", lambda: _running(platform, namespace, name), 90)
    return namespace


def _lookup(platform: Platform, namespace: str, name: str, qtype: str = "") -> str:
    args = ["nslookup", *([f"-type={qtype}"] if qtype else []), name]
    out = platform.kubectl("-n", namespace, "exec", "client", "--", *args, check=False)
    return out.stdout + out.stderr


def test_pods_resolve_services_and_pods_by_name(platform: Platform, pods: str) -> None:
    ns = pods
    resolv = platform.kubectl("-n", ns, "exec", "client", "--", "cat", "/etc/resolv.conf").stdout
    assert f"search {ns}.svc.cluster.local svc.cluster.local cluster.local" in resolv, resolv
    assert "options ndots:5" in resolv, resolv
    dns_ip = _json(platform, "-n", "kube-system", "get", "service", "kube-dns")["spec"]["clusterIP"]
    assert f"nameserver {dns_ip}\n" in resolv, resolv  # through the Service proxy, as upstream
    web_ip = _json(platform, "-n", ns, "get", "service", "web")["spec"]["clusterIP"]
    api_ip = _json(platform, "-n", "default", "get", "service", "kubernetes")["spec"]["clusterIP"]
    assert web_ip in _lookup(platform, ns, f"web.{ns}.svc.cluster.local")
    assert web_ip in _lookup(platform, ns, "web")  # through the search path
    assert api_ip in _lookup(platform, ns, "kubernetes.default.svc.cluster.local")
    # a headless Service: its ready pods, and each by hostname under the subdomain
    db_ip = _json(platform, "-n", ns, "get", "pod", "db-0")["status"]["podIP"]
    wait_until("db's endpoint in DNS", lambda: db_ip in _lookup(platform, ns, "db"), 30)
    assert db_ip in _lookup(platform, ns, f"db-0.db.{ns}.svc.cluster.local")
    assert "5432" in _lookup(platform, ns, f"_sql._tcp.db.{ns}.svc.cluster.local", "srv")
    assert "docs.example.org" in _lookup(platform, ns, f"docs.{ns}.svc.cluster.local", "cname")
    dashed = db_ip.replace(".", "-")
    assert db_ip in _lookup(platform, ns, f"{dashed}.{ns}.pod.cluster.local")
    assert "1.0.1" in _lookup(platform, ns, "dns-version.cluster.local", "txt")
    missing = _lookup(platform, ns, f"nothing.{ns}.svc.cluster.local")
    assert "NXDOMAIN" in missing or "can't find" in missing, missing
    # reverse lookups: a cluster IP names its Service, a headless endpoint its hostname
    assert f"web.{ns}.svc.cluster.local" in _lookup(platform, ns, web_ip)
    assert f"db-0.db.{ns}.svc.cluster.local" in _lookup(platform, ns, db_ip)
    # IPv4 only: AAAA of a Service is an empty answer, not a missing name
    aaaa = _lookup(platform, ns, f"web.{ns}.svc.cluster.local", "aaaa")
    assert "NXDOMAIN" not in aaaa, aaaa


def test_each_host_publishes_its_dns_address(platform: Platform) -> None:
    def published() -> list[dict]:
        return [s for s in _json(platform, "-n", "kube-system", "get", "endpointslices",
                                 "-l", "kubernetes.io/service-name=kube-dns")["items"]
                if s["endpoints"][0].get("nodeName") == TEST_NODE]
    slices = wait_until("a kube-dns slice", published, 30)
    ep = slices[0]["endpoints"][0]
    assert slices[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == \
        "agent.atoll.dev"
    assert ep["conditions"]["ready"] and ep["nodeName"]
    assert {(p["name"], p["protocol"]) for p in slices[0]["ports"]} == {("dns", "UDP"),
                                                                     ("dns-tcp", "TCP")}


def test_reverse_names_in_the_service_range_are_answered_by_the_agent(
        platform: Platform) -> None:
    """Asked from the host at the address the agent publishes: a cluster address without a
    Service is NXDOMAIN from us (the ServiceCIDR is known), never forwarded."""
    from dnslib import QTYPE, RCODE, DNSRecord

    def published() -> list[str]:
        return [s["endpoints"][0]["addresses"][0]
                for s in _json(platform, "-n", "kube-system", "get", "endpointslices",
                               "-l", "kubernetes.io/service-name=kube-dns")["items"]
                if s["endpoints"][0].get("nodeName") == TEST_NODE]
    server = wait_until("a kube-dns slice", published, 30)[0]
    cidr = _json(platform, "get", "servicecidr", "kubernetes")["spec"]["cidrs"][0]
    unused = ipaddress.ip_network(cidr)[-2]  # the allocator hands out from the bottom

    def ask(name: str, qtype: str) -> DNSRecord:
        return DNSRecord.parse(DNSRecord.question(name, qtype).send(server, 53, timeout=5))
    api_ip = _json(platform, "-n", "default", "get", "service", "kubernetes")["spec"]["clusterIP"]
    ptr = ask(ipaddress.ip_address(api_ip).reverse_pointer, "PTR")
    assert [str(rr.rdata) for rr in ptr.rr] == ["kubernetes.default.svc.cluster.local."]

    def ours() -> bool:  # the agent's ServiceCIDR informer may still be listing
        reply = ask(unused.reverse_pointer, "PTR")
        return reply.header.rcode == RCODE.NXDOMAIN and bool(reply.header.aa)
    wait_until("NXDOMAIN from the agent for an unused cluster address", ours, 30)
    aaaa = ask("kubernetes.default.svc.cluster.local", "AAAA")
    assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr
    assert [QTYPE[rr.rtype] for rr in aaaa.auth] == ["SOA"]
