"""LoadBalancer pools as pure rules: which addresses a pool holds, which one a Service gets,
which host announces it, and that a host never announces an address outside every pool
(a Service caught between the announcer's and the address's writes once had a host claim
the other hosts' own addresses on the LAN, cutting them off from the API server)."""

from __future__ import annotations

import pytest

from atoll.agent.host.lbannounce import announced
from atoll.api.network import ANNOUNCER_ANNOTATION
from atoll.api.network.pools import PoolError, addresses, holds
from atoll.controllers import lbpools


def pool(*entries: str, name: str = "lan", auto: bool = True) -> dict:
    return {"metadata": {"name": name}, "spec": {"addresses": list(entries), "autoAssign": auto}}


def lb(name: str, ips: list[str], host: str | None = "h1") -> dict:
    meta: dict = {"name": name, "namespace": "ns"}
    if host:
        meta["annotations"] = {ANNOUNCER_ANNOTATION: host}
    return {"metadata": meta, "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def test_a_pool_holds_its_ranges_and_the_hosts_of_its_networks() -> None:
    p = pool("10.0.0.10-10.0.0.12", "10.0.1.0/30", "10.0.2.7/32")
    assert [str(a) for a in addresses(p)] == [
        "10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.1.1", "10.0.1.2", "10.0.2.7"]
    for ip in ("10.0.0.10", "10.0.0.12", "10.0.1.1", "10.0.1.2", "10.0.2.7"):
        assert holds(p, ip)
    for ip in ("10.0.0.9", "10.0.0.13", "10.0.1.0", "10.0.1.3", "not-an-ip", ""):
        assert not holds(p, ip)


@pytest.mark.parametrize("entry", ["10.0.0.9-10.0.0.1", "10.0.0.300", "10.0.0.0/8", "x-y"])
def test_an_unreadable_or_oversized_entry_names_itself(entry: str) -> None:
    with pytest.raises(PoolError, match=r"spec\.addresses\[1\]"):
        addresses(pool("10.1.0.1", entry))


def test_a_service_keeps_its_address_then_asks_then_takes_the_lowest_free() -> None:
    members = addresses(pool("10.0.0.1-10.0.0.4"))
    svc = lb("a", ["10.0.0.3"])
    assert lbpools.choose_address(svc, members, set()) == "10.0.0.3"
    assert lbpools.choose_address(svc, members, {"10.0.0.3"}) == "10.0.0.1"
    svc["spec"]["loadBalancerIP"] = "10.0.0.4"
    assert lbpools.choose_address(lb("b", []) | {"spec": svc["spec"]}, members, set()) == \
        "10.0.0.4"
    assert lbpools.choose_address(lb("c", []), members, {str(a) for a in members}) is None


def test_the_named_pool_or_the_first_that_assigns_automatically() -> None:
    pools = [pool("10.0.0.1", name="b"), pool("10.0.0.2", name="a", auto=False)]
    assert lbpools.pool_for(lb("x", []), pools)["metadata"]["name"] == "b"
    named = lb("x", [])
    named["metadata"]["annotations"] = {"network.atoll.dev/pool": "a"}
    assert lbpools.pool_for(named, pools)["metadata"]["name"] == "a"
    named["metadata"]["annotations"] = {"network.atoll.dev/pool": "gone"}
    assert lbpools.pool_for(named, pools) is None


def test_a_hosts_failure_moves_only_its_own_services() -> None:
    keys = [f"ns/svc-{n}" for n in range(200)]
    before = {k: lbpools.announcer(k, ["h1", "h2", "h3"]) for k in keys}
    after = {k: lbpools.announcer(k, ["h1", "h3"]) for k in keys}
    assert {before[k] for k in keys} == {"h1", "h2", "h3"}
    assert all(after[k] == before[k] for k in keys if before[k] != "h2")
    assert lbpools.announcer("ns/x", []) is None


def test_a_host_announces_only_pool_addresses_of_services_naming_it() -> None:
    pools = [pool("192.168.1.200-192.168.1.203")]
    services = [
        lb("mine", ["192.168.1.200"]),
        # the node-address ingress of a Service leaving (or entering) a pool
        lb("between", ["192.168.1.11", "192.168.1.12"]),
        lb("theirs", ["192.168.1.201"], host="h2"),
        lb("unannounced", ["192.168.1.202"], host=None),
        dict(lb("clusterip", ["192.168.1.203"]), spec={"type": "ClusterIP"}),
    ]
    assert announced(services, "h1", pools) == {"192.168.1.200"}
    assert announced(services, "h2", pools) == {"192.168.1.201"}
    assert announced(services, "h1", []) == set()
