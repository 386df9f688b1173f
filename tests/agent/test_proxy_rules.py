"""The Service table's rules for loadBalancerSourceRanges (kube-proxy's firewall-ips shape),
and Services nft cannot take left out and named, never failing the whole table: checked on
the rules and against the real kernel (throw-away table names)."""

from __future__ import annotations

import subprocess
import uuid
from typing import Iterator

import pytest

from atoll.agent.host import nft
from atoll.agent.host.nfttable import Present, full_sync
from atoll.agent.host.tablesync import TableSync, refused_fragment
from atoll.agent.proxy import rules

NODE, NODE_IP = "n1", "192.0.2.2"


def _settings(table: str = "t") -> rules.ProxySettings:
    return rules.ProxySettings(table=table, node_name=NODE, cluster_cidr="10.244.0.0/16",
                               node_ip=NODE_IP)


def _lb(name: str, ip: str, ranges: list[str] | None = None, lb_ip: str = NODE_IP,
        port: int = 8081, **spec: object) -> dict:
    body = {"clusterIP": ip, "type": "LoadBalancer",
            "ports": [{"name": "http", "port": port, "protocol": "TCP", "nodePort": 30080}],
            **spec}
    if ranges is not None:
        body["loadBalancerSourceRanges"] = ranges
    return {"metadata": {"namespace": "ns", "name": name}, "spec": body,
            "status": {"loadBalancer": {"ingress": [{"ip": lb_ip}]}}}


def _slices(ns: str, name: str) -> list[dict]:
    return [{"addressType": "IPv4",
             "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
             "endpoints": [{"addresses": ["10.244.0.5"], "nodeName": NODE,
                            "conditions": {"ready": True}}]}]


def _table(services: list[dict], problems: list[str] | None = None,
           table: str = "t") -> rules.Table:
    return rules.table(rules.service_ports(services, _slices, problems), _settings(table))


def _firewall_rules(t: rules.Table) -> dict[str, tuple[str, ...]]:
    return {n: c.rules for n, c in t.chains.items() if n.startswith("firewall-") and
            n != "firewall-check"}


def test_source_ranges_drop_other_sources_to_the_lb_address_before_dnat() -> None:
    t = _table([_lb("open", "10.96.0.5"),
                _lb("closed", "10.96.0.6", [" 203.0.113.0/24", "2001:db8::/64"], port=8082),
                _lb("home", "10.96.0.7", ["192.0.2.0/24"], port=8083),
                _lb("v6only", "10.96.0.8", ["2001:db8::/64"], port=8084)])
    fw = _firewall_rules(t)
    by_service = {name.split("-", 2)[2].split("/")[1]: chain for name, chain in fw.items()}
    assert set(by_service) == {"closed", "home", "v6only"}  # none without ranges
    # IPv6 ranges are the other table's; a range holding the host admits its LB address
    assert by_service["closed"] == ("ip saddr != { 203.0.113.0/24 } drop",)
    assert by_service["home"] == (f"ip saddr != {{ 192.0.2.0/24, {NODE_IP} }} drop",)
    assert by_service["v6only"] == ("drop",)  # ranges, none IPv4: no IPv4 source allowed
    elements = t.stores["firewall-ips"].elements
    assert set(elements or {}) == {f"{NODE_IP} . tcp . {p}" for p in (8082, 8083, 8084)}
    # the check runs on new connections before DNAT (priority below dstnat's -100)
    for base in ("filter-prerouting-pre-dnat", "filter-output-pre-dnat"):
        assert t.chains[base].rules == ("ct state new jump firewall-check",)
    assert t.chains["firewall-check"].rules == (
        "ip daddr . meta l4proto . th dport vmap @firewall-ips",)
    # NodePorts and cluster IPs are not subject to the ranges (upstream)
    assert not any("30080" in k or "10.96.0.6" in k for k in elements or {})


def test_the_legacy_annotation_is_read_when_the_field_is_empty() -> None:
    svc = _lb("annotated", "10.96.0.9")
    svc["metadata"]["annotations"] = {
        "service.beta.kubernetes.io/load-balancer-source-ranges": "198.51.100.0/24, 10.0.0.0/8"}
    assert list(_firewall_rules(_table([svc])).values()) == [
        ("ip saddr != { 10.0.0.0/8, 198.51.100.0/24 } drop",)]


def test_services_that_cannot_be_expressed_are_left_out_and_named() -> None:
    problems: list[str] = []
    t = _table([_lb("good", "10.96.0.5"),
                _lb("badrange", "10.96.0.6", ["10.0.0.0/33"]),
                _lb("badport", "10.96.0.7", port=70000),
                _lb("badlb", "10.96.0.8", lb_ip="not-an-ip"),
                _lb("badext", "10.96.0.9", externalIPs=["1.2.3"]),
                _lb("v6ext", "10.96.0.10", externalIPs=["2001:db8::1"], port=8090)], problems)
    assert sorted(p.split(":")[0] for p in problems) == [
        "Service ns/badext", "Service ns/badlb", "Service ns/badport", "Service ns/badrange"]
    assert "spec.loadBalancerSourceRanges[0]" in next(p for p in problems if "badrange" in p)
    listed = full_sync(t, Present())
    assert "ns/good/" in listed and "ns/v6ext/" in listed and "2001:db8" not in listed
    assert not any(f"ns/{bad}/" in listed for bad in ("badrange", "badport", "badlb", "badext"))


def test_owner_names_the_service_of_a_refused_line() -> None:
    line = "add element ip t service-ips { " \
           "10.96.0.5 . tcp . 80 : goto service-ABCDEFGH-ns/web/tcp/http, " \
           "10.96.0.6 . tcp . 80 : goto service-BCDEFGHI-ns/api/tcp/http }"
    column = line.index("10.96.0.6")
    error = nft.NftError(f"/dev/stdin:9:{column + 1}-{column + 9}: Error: nope\n{line}\n"
                         + " " * column + "^" * 9)
    fragment = refused_fragment(error)
    assert fragment == "10.96.0.6 . tcp . 80 : goto service-BCDEFGHI-ns/api/tcp/http"
    assert rules.owner(fragment) == "ns/api"
    assert rules.owner("add rule ip t endpoint-ABCDEFGH-ns/web/tcp/http__10.0.0.1/80 x") \
        == "ns/web"
    assert rules.owner(line) is None  # two Services: not one to blame


@pytest.fixture
def table_name() -> Iterator[str]:
    name = f"atoll_t_{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["nft", "delete", "table", "ip", name], capture_output=True)


def _listing(table: str) -> str:
    return subprocess.run(["nft", "list", "table", "ip", table], capture_output=True,
                          text=True, check=True).stdout


async def test_the_firewall_and_unexpressible_services_against_the_kernel(table_name) -> None:
    problems: list[str] = []
    services = [_lb("good", "10.96.0.5", ["203.0.113.0/24"]),
                _lb("badport", "10.96.0.7", port=0),
                _lb("badrange", "10.96.0.6", ["300.0.0.0/8"])]
    sync = TableSync()
    await sync.apply(_table(services, problems, table_name))
    listing = _listing(table_name)
    assert "ns/good/" in listing and "ip saddr != 203.0.113.0/24 drop" in listing
    assert "ns/badport" not in listing and "ns/badrange" not in listing
    assert len(problems) == 2


async def test_a_service_nft_refuses_is_left_out_and_the_rest_applied(table_name) -> None:
    """Isolation beyond the builder's checks: a port nft cannot take (here an endpoint
    address no checker would pass, built by hand) costs only its own Service."""
    good = rules.service_ports([_lb("good", "10.96.0.5")], _slices)
    bad = rules.service_ports([_lb("bad", "10.96.0.6")], _slices)
    bad[0].endpoints[0].ip = "10.244.0.300"

    def build(excluded: frozenset[str]) -> rules.Table:
        ports = [p for p in good + bad if f"{p.namespace}/{p.name}" not in excluded]
        return rules.table(ports, _settings(table_name))

    sync = TableSync()
    with pytest.raises(nft.NftError):  # as one transaction nothing at all would apply
        await sync.apply(build(frozenset()))
    refused = await sync.apply_isolating(build, rules.owner)
    assert list(refused) == ["ns/bad"] and "10.244.0.300" in refused["ns/bad"]
    listing = _listing(table_name)
    assert "ns/good/" in listing and "ns/bad/" not in listing
    # a refusal that names no Service is not guessed at: the sync fails as a whole
    with pytest.raises(nft.NftError):
        await TableSync().apply_isolating(
            lambda _: rules.table([], _settings("atoll_t_bad name")), rules.owner)
