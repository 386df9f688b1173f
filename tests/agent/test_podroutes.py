"""Which routes a host wants to the other hosts' pod ranges."""

from atoll.agent.host.routes import desired_routes


def node(name: str, cidr: str | None, ip: str | None) -> dict:
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}] if ip else []}}


def test_other_hosts_ranges_via_their_addresses() -> None:
    nodes = [node("a", "10.245.1.0/24", "172.30.0.11"), node("b", "10.245.2.0/24", "172.30.0.12"),
             node("c", "10.245.3.0/24", "172.30.0.11"),  # another agent on host a itself
             node("d", None, "172.30.0.14"), node("e", "10.245.1.128/25", "172.30.0.15"),
             node("f", "bogus", "172.30.0.16")]
    assert desired_routes(nodes, "a", "172.30.0.11", "10.245.1.0/24") == {
        "10.245.2.0/24": "172.30.0.12"}
