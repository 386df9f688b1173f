"""A VM's resolver through cloud-init network config v2: the cluster DNS on the host's bridge
address and the pods' search path, unless the VirtualMachine names its own."""

from __future__ import annotations

import yaml

from atoll.agent.vms import bootstrap as vmbootstrap
from atoll.agent.vms.network import VMAddress

ADDR = VMAddress(ip="10.88.0.7", prefixlen=16, gateway="10.88.0.1", mac="52:54:00:01:02:03",
                 tap="vmabc")


def vm(**network: object) -> dict:
    return {"metadata": {"name": "db", "namespace": "shop", "uid": "u-1"},
            "spec": {"network": network}}


def dns(config: dict) -> dict:
    # what the seed disk holds, read back as cloud-init would
    return yaml.safe_load(yaml.safe_dump(config))["ethernets"]["eth0"]["nameservers"]


def test_a_vm_gets_the_cluster_resolver_like_a_pod() -> None:
    config = vmbootstrap.network_config(ADDR, vm(), "cluster.local")
    assert config["version"] == 2
    assert dns(config) == {"addresses": ["10.88.0.1"],
                           "search": ["shop.svc.cluster.local", "svc.cluster.local",
                                      "cluster.local"]}
    assert dns(vmbootstrap.network_config(ADDR, vm(), "corp.example"))["search"][0] == \
        "shop.svc.corp.example"
    # without the VM (an older caller): the cluster DNS and the namespace-free suffixes
    assert dns(vmbootstrap.network_config(ADDR)) == {
        "addresses": ["10.88.0.1"], "search": ["svc.cluster.local", "cluster.local"]}


def test_the_vms_own_nameservers_and_search_domains_win() -> None:
    own = vm(nameservers=["192.0.2.53"], searchDomains=["corp.example"])
    assert dns(vmbootstrap.network_config(ADDR, own)) == {"addresses": ["192.0.2.53"],
                                                          "search": ["corp.example"]}
    # an interface's settings before the VM's
    iface = vm(nameservers=["192.0.2.53"],
               interfaces=[{"name": "eth0", "nameservers": ["198.51.100.53"]}])
    assert dns(vmbootstrap.network_config(ADDR, iface)) == {"addresses": ["198.51.100.53"]}
    # own search domains only: with the cluster's server
    search_only = vm(interfaces=[{"name": "eth0", "searchDomains": ["lab.example"]}])
    assert dns(vmbootstrap.network_config(ADDR, search_only)) == {
        "addresses": ["10.88.0.1"], "search": ["lab.example"]}
