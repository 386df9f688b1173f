"""A pod's resolv.conf per dnsPolicy and dnsConfig, as kubelet writes it."""

from __future__ import annotations

from atoll.agent.pods.containerspec import DNSSettings, resolv_conf

HOST = "nameserver 10.255.255.53\nsearch corp.example\noptions edns0\n"
DNS = DNSSettings("10.88.0.1", "cluster.local")


def _pod(**spec: object) -> dict:
    return {"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}


def test_cluster_first_uses_the_cluster_server_search_path_and_ndots() -> None:
    assert resolv_conf(_pod(), HOST, DNS) == (
        "nameserver 10.88.0.1\n"
        "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
        "options ndots:5\n")


def test_host_network_default_and_none_policies() -> None:
    assert resolv_conf(_pod(hostNetwork=True), HOST, DNS) == (
        "nameserver 10.255.255.53\nsearch corp.example\noptions edns0\n")
    assert resolv_conf(_pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), HOST,
                       DNS).startswith("nameserver 10.88.0.1\n")
    assert resolv_conf(_pod(dnsPolicy="Default"), HOST, DNS).startswith("nameserver 10.255.")
    none = resolv_conf(_pod(dnsPolicy="None", dnsConfig={
        "nameservers": ["1.1.1.1"], "searches": ["a.example"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}), HOST, DNS)
    assert none == "nameserver 1.1.1.1\nsearch a.example\noptions ndots:2 rotate\n"


def test_dns_config_merges_and_overrides_options() -> None:
    out = resolv_conf(_pod(dnsConfig={"nameservers": ["10.0.0.2", "10.0.0.3", "10.0.0.4"],
                                      "options": [{"name": "ndots", "value": "1"}]}), HOST, DNS)
    # at most three nameservers, the cluster's first; a given option replaces the default
    assert out.splitlines()[:3] == ["nameserver 10.88.0.1", "nameserver 10.0.0.2",
                                    "nameserver 10.0.0.3"]
    assert out.splitlines()[-1] == "options ndots:1"
