"""A VM's network settings honoured, not ignored: a static address on the pod network claimed
in the host's IPAM, the gateway, the default network; each request the host cannot honour is
a VirtualMachineNetworkReady reason, and the guest's config says what was given."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from atoll.agent.host.network import LocalIPAM, NetworkError
from atoll.agent.vms import bootstrap as vmbootstrap
from atoll.agent.vms.launch import VMSetupError, interface_request
from atoll.agent.vms.network import InterfaceRequest, VMAddress

POD_NET = ipaddress.ip_network("10.88.0.0/16")
GATEWAY = "10.88.0.1"


def vm(**nic: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "ns", "uid": "u-1"},
            "spec": {"network": {"interfaces": [{"name": "eth0", **nic}]}}}


def test_what_the_host_can_honour() -> None:
    assert interface_request({"metadata": {}, "spec": {}}, POD_NET, GATEWAY) == \
        InterfaceRequest()
    assert interface_request(vm(), POD_NET, GATEWAY) == InterfaceRequest()
    assert interface_request(vm(network={"name": ""}, addresses=["10.88.3.4/16"],
                                gateway4=GATEWAY), POD_NET, GATEWAY) == \
        InterfaceRequest(ip="10.88.3.4")
    assert interface_request(vm(addresses=["10.88.3.4"], gateway4="None"), POD_NET,
                             GATEWAY) == InterfaceRequest(ip="10.88.3.4", route=False)


@pytest.mark.parametrize("nic,reason,words", [
    ({"network": {"name": "vpc-blue", "kind": "SubnetSet"}}, "NetworkNotFound",
     "network 'vpc-blue' does not exist"),
    ({"addresses": ["10.89.0.5/16"]}, "AddressUnavailable", "not on this host's pod network"),
    ({"addresses": ["10.88.0.5/24"]}, "AddressUnavailable", "not on this host's pod network"),
    ({"addresses": ["10.88.0.5/16", "10.88.0.6/16"]}, "AddressUnavailable", "one IPv4"),
    ({"addresses": ["2001:db8::5/64"]}, "AddressUnavailable", "one IPv4"),
    ({"addresses": ["ten"]}, "AddressUnavailable", "not an address in CIDR form"),
    ({"gateway4": "10.88.0.254"}, "GatewayUnavailable", "not this host's pod network gateway"),
])
def test_what_it_cannot_is_a_network_condition(nic: dict[str, Any], reason: str,
                                               words: str) -> None:
    with pytest.raises(VMSetupError) as e:
        interface_request(vm(**nic), POD_NET, GATEWAY)
    assert (e.value.condition, e.value.reason) == ("VirtualMachineNetworkReady", reason)
    assert words in e.value.message and "spec.network.interfaces[0]" in e.value.message


def test_a_second_interface_is_refused() -> None:
    two = vm()
    two["spec"]["network"]["interfaces"].append({"name": "eth1"})
    with pytest.raises(VMSetupError, match="2 interfaces"):
        interface_request(two, POD_NET, GATEWAY)


def test_a_static_address_is_claimed_once_and_only_if_free(tmp_path: Path) -> None:
    ipam = LocalIPAM(ipaddress.ip_network("10.9.0.0/29"), tmp_path)
    assert ipam.allocate("pod") == "10.9.0.2"
    with pytest.raises(NetworkError, match="in use"):
        ipam.claim("vm", "10.9.0.2")
    for reserved in ("10.9.0.0", "10.9.0.1", "10.9.0.7", "10.9.1.2"):
        with pytest.raises(NetworkError, match="not a workload address"):
            ipam.claim("vm", reserved)
    assert ipam.allocate("vm") == "10.9.0.3"  # its dynamic address first ...
    assert ipam.claim("vm", "10.9.0.5") == "10.9.0.5"  # ... then it asks for a static one
    assert not (tmp_path / "10.9.0.3").exists() and (tmp_path / "10.9.0.5").read_text() == "vm"
    assert ipam.claim("vm", "10.9.0.5") == "10.9.0.5"  # idempotent
    again = LocalIPAM(ipaddress.ip_network("10.9.0.0/29"), tmp_path)  # an agent restart
    assert again.claim("vm", "10.9.0.5") == "10.9.0.5" and again.allocate("vm") == "10.9.0.5"
    assert again.allocate("next") not in ("10.9.0.2", "10.9.0.5")


def test_the_guest_is_told_the_address_and_route_it_got() -> None:
    addr = VMAddress(ip="10.88.3.4", prefixlen=16, gateway=GATEWAY, mac="52:54:00:01:02:03",
                     tap="vmabc", route=False)
    eth = vmbootstrap.network_config(addr, vm(gateway4="None"))["ethernets"]["eth0"]
    assert eth["addresses"] == ["10.88.3.4/16"] and "routes" not in eth
    assert eth["nameservers"]["addresses"] == [GATEWAY]  # the cluster DNS stays on the bridge
    assert "ip=10.88.3.4:::255.255.0.0:web:eth0:off" in vmbootstrap.kernel_cmdline(addr, "web")
    routed = VMAddress(**dict(addr.__dict__, route=True))
    assert vmbootstrap.network_config(routed)["ethernets"]["eth0"]["routes"] == [
        {"to": "0.0.0.0/0", "via": GATEWAY}]
    # a state file written before ``route`` existed still loads
    old = {k: v for k, v in addr.__dict__.items() if k != "route"}
    assert VMAddress(**old).route is True
