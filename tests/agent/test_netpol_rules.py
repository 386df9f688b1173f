"""A NetworkPolicy rule nft cannot carry (the API stores ipBlocks and ports unchecked) is left
out and named, against the real kernel: the other policies apply, and the bad rule's
policy still isolates the pods it selects (it allows nothing rather than failing open)."""

from __future__ import annotations

import subprocess
import uuid
from typing import Iterator

import pytest

from atoll.agent.host.tablesync import TableSync
from atoll.agent.netpol import rules

NODE = "n1"
PODS = [rules.Pod("ns", "web", "10.244.0.2", {"app": "web"}, NODE, {}),
        rules.Pod("ns", "db", "10.244.0.3", {"app": "db"}, NODE, {}),
        rules.Pod("ns", "client", "10.244.0.4", {"run": "client"}, NODE, {})]


def _policy(name: str, app: str, ingress: list[dict]) -> dict:
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"podSelector": {"matchLabels": {"app": app}}, "ingress": ingress}}


@pytest.fixture
def table_name() -> Iterator[str]:
    name = f"atoll_t_{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["nft", "delete", "table", "inet", name], capture_output=True)


async def test_a_rule_nft_cannot_carry_is_left_out_and_its_policy_still_isolates(
        table_name: str) -> None:
    policies = [
        _policy("web-from-client", "web", [
            {"from": [{"podSelector": {"matchLabels": {"run": "client"}}}]}]),
        _policy("db-bad", "db", [
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]},
            {"from": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["bogus"]}}]},
            {"ports": [{"port": 70000}]},
            {"from": [{"ipBlock": {"cidr": "2001:db8::/64"}}]},  # the other family: ignored
            {"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 5432}]}]),
    ]
    problems: list[str] = []
    table = rules.table(table_name, policies, PODS, {"ns": {}}, NODE, problems)
    assert problems == [
        "NetworkPolicy ns/db-bad: spec.ingress[0].from[0].ipBlock.cidr: '10.0.0.0/33' "
        "is not a CIDR",
        "NetworkPolicy ns/db-bad: spec.ingress[1].from[0].ipBlock.except[0]: 'bogus' "
        "is not a CIDR",
        "NetworkPolicy ns/db-bad: spec.ingress[2].ports[0].port: 70000 is not a port number"]
    await TableSync().apply(table)
    listing = subprocess.run(["nft", "list", "table", "inet", table_name], capture_output=True,
                             text=True, check=True).stdout
    assert "ns/web" in listing and "10.244.0.4 accept" in listing
    db_chain = listing[listing.index("ns/db {"):]
    db_chain = db_chain[:db_chain.index("}")]
    # only the good rule of the bad policy, then the isolation's drop
    assert "ip saddr 192.0.2.0/24 tcp dport 5432 accept" in db_chain
    assert "10.0.0.0" not in db_chain and "10.1.0.0" not in db_chain and "drop" in db_chain


def _chain(listing: str, who: str) -> str:
    body = listing[listing.index(f"{who} {{"):]
    return body[:body.index("\n\t}")]


async def test_an_unparsable_stored_pod_selector_isolates_its_namespace_and_allows_nothing(
        table_name: str) -> None:
    """A selector stored before the API checked them selects every workload of its namespace
    for isolation and allows nothing (fail closed), and is reported."""
    bad = {"metadata": {"namespace": "ns", "name": "bad-sel"},
           "spec": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Near",
                                                          "values": ["web"]}]},
                    "ingress": [{}, {"ports": [{"port": 80}]}]}}  # would allow everyone
    elsewhere = rules.Pod("other", "web", "10.244.0.9", {"app": "web"}, NODE, {})
    problems: list[str] = []
    table = rules.table(table_name, [bad], [*PODS, elsewhere], {"ns": {}, "other": {}}, NODE,
                        problems)
    assert len(problems) == 1 and "NetworkPolicy ns/bad-sel: spec.podSelector" in problems[0]
    await TableSync().apply(table)
    listing = subprocess.run(["nft", "list", "table", "inet", table_name], capture_output=True,
                             text=True, check=True).stdout
    for pod in PODS:
        chain = _chain(listing, f"ns/{pod.name}")
        assert "accept" not in chain and "drop" in chain, chain
    assert "other/web" not in listing  # another namespace is not the policy's
    # a peer selector it cannot parse matches nobody; the good peer still allows
    peers = _policy("peers", "web", [{"from": [
        {"podSelector": {"matchExpressions": [{"key": "run", "operator": "Near"}]}},
        {"podSelector": {"matchLabels": {"run": "client"}}}]}])
    table = rules.table(table_name, [peers], PODS, {"ns": {}}, NODE)
    assert "ip saddr { 10.244.0.4 } accept" in table.chains[
        next(c for c in table.chains if c.endswith("ns/web"))].rules  # type: ignore[attr-defined]


async def test_vms_are_selected_isolated_and_peers_like_pods(table_name: str) -> None:
    """A VM (its labels, its host label, its primaryIP4) is a workload like a pod: selected by
    podSelectors, given chains on its own host, and a peer of pods' rules."""
    def vm(name: str, ip: str | None, host: str, labels: dict) -> dict:
        return {"metadata": {"namespace": "ns", "name": name, "uid": f"u-{name}",
                             "labels": {**labels, "vmoperator.atoll.dev/host": host}},
                "status": {"network": {"primaryIP4": ip} if ip else None}}
    here = rules.vm_view(vm("web", "10.244.0.20", NODE, {"app": "web"}))
    there = rules.vm_view(vm("client-vm", "10.244.1.5", "n2", {"run": "client"}))
    booting = rules.vm_view(vm("boot", None, NODE, {"app": "web"}), address="10.244.0.21")
    assert rules.vm_view(vm("off", None, NODE, {"app": "web"})) is None
    assert here is not None and there is not None and booting is not None
    assert (here.node, here.kind, booting.ip) == (NODE, "vm", "10.244.0.21")
    workloads = [*PODS, here, there, booting]
    policies = [_policy("web", "web", [{"from": [{"podSelector": {"matchLabels": {
        "run": "client"}}}], "ports": [{"port": 8080}]}])]
    await TableSync().apply(rules.table(table_name, policies, workloads, {"ns": {}}, NODE))
    listing = subprocess.run(["nft", "list", "table", "inet", table_name], capture_output=True,
                             text=True, check=True).stdout
    chain = _chain(listing, "vm.ns/web")
    # the pod client and the VM client on another host are both peers
    assert "10.244.0.4" in chain and "10.244.1.5" in chain and "8080 accept" in chain, chain
    assert "drop" in chain
    assert "vm.ns/boot" in listing
    assert "client-vm" not in listing  # another host's VM gets no chain here
    assert "10.244.0.20 : jump" in listing
