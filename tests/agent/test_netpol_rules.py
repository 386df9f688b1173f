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
