"""Service addresses on a real server with kubectl: cluster IPs held as IPAddress objects
(claimed and released in the Service's own write), node ports from the configured range,
upstream's 422s for taken or foreign values, and the default/kubernetes Service."""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import Platform, slot_node_ports, slot_service_cidr, wait_until

RANGE = ipaddress.IPv4Network(slot_service_cidr(0))
LOW, HIGH = (int(p) for p in slot_node_ports(0).split("-"))


def _get(platform: Platform, *args: str) -> dict:
    return json.loads(platform.kubectl(*args, "-o", "json").stdout)


def _service(namespace: str, name: str, **spec: object) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"ports": [{"port": 80}], **spec}})


def test_default_kubernetes_and_the_service_cidr_are_bootstrapped(platform: Platform) -> None:
    # deleted (by a careless admin or another test), it comes back, as upstream's does
    platform.kubectl("-n", "default", "delete", "service", "kubernetes", "--ignore-not-found")
    wait_until("default/kubernetes back", lambda: platform.kubectl(
        "-n", "default", "get", "service", "kubernetes", check=False).returncode == 0, 30)
    svc = _get(platform, "-n", "default", "get", "service", "kubernetes")
    assert svc["spec"]["clusterIPs"] == [str(RANGE.network_address + 1)]
    assert svc["spec"]["ports"][0]["port"] == 443 and svc["spec"]["ports"][0]["name"] == "https"
    cidr = _get(platform, "get", "servicecidr", "kubernetes")
    assert cidr["spec"]["cidrs"] == [str(RANGE)]
    dns = _get(platform, "-n", "kube-system", "get", "service", "kube-dns")
    assert dns["spec"]["clusterIP"] == str(RANGE.network_address + 10)
    assert "selector" not in dns["spec"] and dns["spec"]["internalTrafficPolicy"] == "Local"
    assert [(p["name"], p["port"], p["protocol"]) for p in dns["spec"]["ports"]] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    ipa = _get(platform, "get", "ipaddress", str(RANGE.network_address + 1))
    assert ipa["spec"]["parentRef"] == {"group": "", "resource": "services",
                                        "namespace": "default", "name": "kubernetes"}


def test_cluster_ips_are_claimed_released_and_refused_when_taken(platform: Platform,
                                                                 namespace: str) -> None:
    # twelve creates at once from separate clients: twelve distinct addresses, each held
    def create(i: int) -> str:
        platform.kubectl("create", "-f", "-", input=_service(namespace, f"s{i}"))
        return _get(platform, "-n", namespace, "get", "service", f"s{i}")["spec"]["clusterIP"]
    with ThreadPoolExecutor(6) as pool:
        ips = list(pool.map(create, range(12)))
    assert len(set(ips)) == 12 and all(ipaddress.IPv4Address(ip) in RANGE for ip in ips)
    # dynamic picks stay out of the static band (the first 256 of a /16)
    assert all(int(ipaddress.IPv4Address(ip)) - int(RANGE.network_address) > 256 for ip in ips)
    owner = _get(platform, "get", "ipaddress", ips[0])["spec"]["parentRef"]
    assert (owner["namespace"], owner["name"]) == (namespace, "s0")

    taken = platform.kubectl("create", "-f", "-", check=False,
                             input=_service(namespace, "dup", clusterIP=ips[0]))
    assert taken.returncode != 0
    assert f'failed to allocate IP {ips[0]}: provided IP is already allocated' in taken.stderr
    outside = platform.kubectl("create", "-f", "-", check=False,
                               input=_service(namespace, "far", clusterIP="192.0.2.7"))
    assert "is not in the valid range" in outside.stderr and str(RANGE) in outside.stderr

    platform.kubectl("-n", namespace, "delete", "service", "s0")
    gone = platform.kubectl("get", "ipaddress", ips[0], check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr  # released with the Service
    platform.kubectl("create", "-f", "-", input=_service(namespace, "again", clusterIP=ips[0]))
    assert _get(platform, "-n", namespace, "get", "service", "again")["spec"]["clusterIP"] == ips[0]
    immutable = platform.kubectl("-n", namespace, "patch", "service", "again", "--type=merge",
                                 "-p", json.dumps({"spec": {"clusterIP": ips[1]}}), check=False)
    assert immutable.returncode != 0 and "may not change once set" in immutable.stderr


def test_node_ports_come_from_the_range_and_survive_updates(platform: Platform,
                                                            namespace: str) -> None:
    platform.kubectl("-n", namespace, "create", "service", "nodeport", "web", "--tcp=80:8080")
    web = _get(platform, "-n", namespace, "get", "service", "web")
    port = web["spec"]["ports"][0]["nodePort"]
    assert LOW <= port <= HIGH and web["spec"]["externalTrafficPolicy"] == "Cluster"
    # kubectl apply of a manifest without nodePort keeps the one given
    platform.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
        "spec": {"type": "NodePort", "ports": [{"name": "80-8080", "port": 80,
                                                "targetPort": 8081}]}}))
    after = _get(platform, "-n", namespace, "get", "service", "web")["spec"]["ports"][0]
    assert after["nodePort"] == port and after["targetPort"] == 8081
    dup = platform.kubectl("create", "-f", "-", check=False, input=_service(
        namespace, "dup", type="NodePort", ports=[{"port": 81, "nodePort": port}]))
    assert f"spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated" \
        in dup.stderr
    low = platform.kubectl("create", "-f", "-", check=False, input=_service(
        namespace, "low", type="NodePort", ports=[{"port": 81, "nodePort": 80}]))
    assert f"The range of valid ports is {LOW}-{HIGH}" in low.stderr
    # a ClusterIP Service turned NodePort gets a port; turned back, loses it
    platform.kubectl("-n", namespace, "create", "service", "clusterip", "flip", "--tcp=80:80")
    platform.kubectl("-n", namespace, "patch", "service", "flip", "--type=merge",
                     "-p", '{"spec": {"type": "NodePort"}}')
    flipped = _get(platform, "-n", namespace, "get", "service", "flip")["spec"]["ports"][0]
    assert LOW <= flipped["nodePort"] <= HIGH and flipped["nodePort"] != port
    platform.kubectl("-n", namespace, "patch", "service", "flip", "--type=merge",
                     "-p", '{"spec": {"type": "ClusterIP"}}')
    back = _get(platform, "-n", namespace, "get", "service", "flip")["spec"]["ports"][0]
    assert "nodePort" not in back


def test_default_kubernetes_endpoints_list_the_live_api_server(platform: Platform) -> None:
    server_port = int(platform.url.rsplit(":", 1)[1])
    wait_until("default/kubernetes endpoints", lambda: _get(
        platform, "-n", "default", "get", "endpoints", "kubernetes").get("subsets"), 30)
    ep = _get(platform, "-n", "default", "get", "endpoints", "kubernetes")
    [subset] = ep["subsets"]
    assert subset["ports"] == [{"name": "https", "port": server_port, "protocol": "TCP"}]
    assert len(subset["addresses"]) == 1
    eps = _get(platform, "-n", "default", "get", "endpointslice", "kubernetes")
    assert eps["endpoints"][0]["addresses"] == [subset["addresses"][0]["ip"]]
    assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
    leases = _get(platform, "-n", "kube-system", "get", "leases",
                  "-l", "apiserver.kubernetes.io/identity=kube-apiserver")["items"]
    assert len(leases) == 1 and leases[0]["spec"]["leaseDurationSeconds"] == 15
