"""Which /32 routes a host keeps for VMs that moved with their address (pure rules)."""

from __future__ import annotations

from atoll.agent.host.roaming import Placement, desired, gateway_of, node_facts, placements

FACTS = {"h1": ("10.0.1.0/24", "192.168.0.11"), "h2": ("10.0.2.0/24", "192.168.0.12"),
         "h3": ("10.0.3.0/24", "192.168.0.13")}


def test_a_vm_at_home_needs_no_route_anywhere() -> None:
    where = {"u": Placement("10.0.1.5", "h1")}
    for me, (cidr, ip) in FACTS.items():
        assert desired(where, FACTS, me, ip, cidr) == {}


def test_a_moved_vm_is_on_the_bridge_where_it_runs_and_via_that_host_elsewhere() -> None:
    where = {"u": Placement("10.0.1.5", "h2")}
    assert desired(where, FACTS, "h2", "192.168.0.12", "10.0.2.0/24") == {"10.0.1.5/32": ""}
    assert desired(where, FACTS, "h1", "192.168.0.11", "10.0.1.0/24") == \
        {"10.0.1.5/32": "192.168.0.12"}
    assert desired(where, FACTS, "h3", "192.168.0.13", "10.0.3.0/24") == \
        {"10.0.1.5/32": "192.168.0.12"}


def test_hosts_sharing_one_address_route_nothing_to_each_other() -> None:
    facts = dict(FACTS, h2=("10.0.2.0/24", "192.168.0.11"))  # two agents on one machine
    where = {"u": Placement("10.0.1.5", "h2")}
    assert desired(where, facts, "h1", "192.168.0.11", "10.0.1.0/24") == {}


def test_placements_and_facts_come_from_the_objects() -> None:
    vms = [{"metadata": {"uid": "a", "labels": {"vmoperator.atoll.dev/host": "h2"}},
            "status": {"network": {"primaryIP4": "10.0.1.5"}}},
           {"metadata": {"uid": "b", "labels": {}}, "status": {}}]
    assert placements(vms) == {"a": Placement("10.0.1.5", "h2")}
    nodes = [{"metadata": {"name": "h1"}, "spec": {"podCIDR": "10.0.1.0/24"},
              "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.11"}]}}]
    assert node_facts(nodes) == {"h1": ("10.0.1.0/24", "192.168.0.11")}
    assert gateway_of("10.0.1.5", FACTS) == "10.0.1.1"
    assert gateway_of("172.16.0.1", FACTS) is None
