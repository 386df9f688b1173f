"""NetworkPolicy validation as upstream's ValidateNetworkPolicy: each malformed field is a 422
cause with upstream's path and words, so no agent ever sees a selector or CIDR it must guess."""

from __future__ import annotations

from typing import Any

import pytest

from atoll.api import errors
from atoll.api.resources import networking_v1 as net

RT = net.NETWORKPOLICIES


def _policy(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}


def _causes(spec: dict[str, Any], old: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    strategy = net.NETWORKPOLICY.strategy
    assert strategy is not None
    try:
        if old is None:
            strategy.validate_create(None, RT, _policy(spec))  # type: ignore[arg-type]
        else:
            strategy.validate_update(None, RT, _policy(old), _policy(spec))  # type: ignore
    except errors.Invalid as e:
        assert e.to_status()["code"] == 422
        return [(c.field, c.message) for c in e.causes]
    return []


def test_a_well_formed_policy_passes() -> None:
    assert _causes({
        "podSelector": {"matchLabels": {"app": "web"},
                        "matchExpressions": [{"key": "tier", "operator": "In",
                                              "values": ["a", "b"]},
                                             {"key": "x", "operator": "DoesNotExist"}]},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}},
                              {"ipBlock": {"cidr": "10.0.0.0/8",
                                           "except": ["10.1.0.0/16", "10.2.3.4/32"]}}],
                     "ports": [{"port": "http"}, {"protocol": "UDP", "port": 53},
                               {"port": 8000, "endPort": 8080}, {"protocol": "SCTP"}]}],
        "egress": [{}, {"to": [{"ipBlock": {"cidr": "10.0.0.1/24"}}]}]}) == []


@pytest.mark.parametrize("spec,field,words", [
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals",
                                            "values": ["b"]}]}},
     "spec.podSelector.matchExpressions[0].operator",
     'Invalid value: "Equals": not a valid selector operator'),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "spec.podSelector.matchExpressions[0].values",
     "Required value: must be specified when `operator` is 'In' or 'NotIn'"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",
                                            "values": ["b"]}]}},
     "spec.podSelector.matchExpressions[0].values",
     "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "NotIn",
                                            "values": ["-bad"]}]}},
     "spec.podSelector.matchExpressions[0].values[0]", 'Invalid value: "-bad": a valid label'),
    ({"podSelector": {"matchExpressions": [{"key": "-a", "operator": "Exists"}]}},
     "spec.podSelector.matchExpressions[0].key", 'Invalid value: "-a": name part must'),
    ({"podSelector": {"matchLabels": {"app": "no way"}}},
     "spec.podSelector.matchLabels", 'Invalid value: "no way": a valid label'),
    ({"podSelector": {}, "ingress": [{"from": [{}, {"namespaceSelector": {"matchExpressions": [
        {"key": "k", "operator": "Nope"}]}}]}]},
     "spec.ingress[0].from[0]", "Required value: must specify a peer"),
    ({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "k", "operator": "Nope"}]}}]}]},
     "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator",
     'Invalid value: "Nope": not a valid selector operator'),
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"},
                                             "podSelector": {}}]}]},
     "spec.egress[0].to[0]", "Forbidden: may not specify both ipBlock and another peer"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
     "spec.ingress[0].from[0].ipBlock.cidr",
     'Invalid value: "10.0.0.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or '
     '2001:db8::/64)'),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {}}]}]},
     "spec.ingress[0].from[0].ipBlock.cidr", "Required value"),
    ({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}, {"ipBlock": {
        "cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}}]}]},
     "spec.ingress[0].from[1].ipBlock.except[0]",
     'Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`'),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}]}]},
     "spec.ingress[0].from[0].ipBlock.except[0]", "must be a strict subset of `cidr`"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.0.0.0/16", "except": ["192.168.0.0/24"]}}]}]},
     "spec.ingress[0].from[0].ipBlock.except[0]", "must be a strict subset of `cidr`"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.0.0.0/16", "except": ["bogus"]}}]}]},
     "spec.ingress[0].from[0].ipBlock.except[0]", "must be a valid CIDR value"),
    ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]},
     "spec.ingress[0].ports[0].protocol",
     'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"'),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]},
     "spec.ingress[0].ports[0].port",
     "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "Web_Port"}]}]},
     "spec.ingress[0].ports[0].port",
     'Invalid value: "Web_Port": must contain only alpha-numeric characters (a-z, 0-9), '
     'and hyphens (-)'),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "a-very-long-port-name"}]}]},
     "spec.ingress[0].ports[0].port", "must be no more than 15 characters"),
    ({"podSelector": {}, "egress": [{"ports": [{"port": "http", "endPort": 90}]}]},
     "spec.egress[0].ports[0].endPort",
     "Invalid value: 90: may not be specified when `port` is non-numeric"),
    ({"podSelector": {}, "egress": [{"ports": [{"endPort": 90}]}]},
     "spec.egress[0].ports[0].endPort",
     "Invalid value: 90: may not be specified when `port` is not specified"),
    ({"podSelector": {}, "egress": [{"ports": [{"port": 90, "endPort": 80}]}]},
     "spec.egress[0].ports[0].endPort",
     "Invalid value: 80: must be greater than or equal to `port`"),
    ({"podSelector": {}, "policyTypes": ["Ingress", "Sideways"]},
     "spec.policyTypes[1]", 'Unsupported value: "Sideways": supported values: "Ingress", '
                            '"Egress"'),
    ({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]},
     "spec.policyTypes", "may not specify more than two policyTypes"),
])
def test_each_malformed_field_is_named_in_upstreams_words(spec: dict[str, Any], field: str,
                                                          words: str) -> None:
    causes = _causes(spec)
    assert any(f == field and words in m for f, m in causes), causes


def test_legacy_cidr_forms_are_read_as_go_reads_them() -> None:
    assert str(net.parse_cidr("010.001.0.0/16")) == "10.1.0.0/16"
    assert str(net.parse_cidr("10.1.2.3/8")) == "10.0.0.0/8"
    for bad in ("10.0.0.0", "10.0.0.0/33", "1.2.3/8", "256.0.0.0/8", "x/8", None, 7):
        assert net.parse_cidr(bad) is None
    assert _causes({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "010.0.0.0/8", "except": ["010.1.0.0/16"]}}]}]}) == []
    # Go's IPNet.Contains reads an IPv4-mapped address as IPv4: upstream takes this except
    assert _causes({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "10.0.0.0/8", "except": ["::ffff:10.1.0.0/112"]}}]}]}) == []
    assert _causes({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "2001:db8::/32", "except": ["10.1.0.0/16"]}}]}]})


def test_an_update_may_keep_what_the_stored_policy_already_had() -> None:
    old = {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In",
                                                 "values": ["-old"]}]},
           "ingress": [{"from": [{"ipBlock": {"cidr": "bad/8"}}]}]}
    assert _causes(old, old=old) == []
    new = {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "worse/8"}}]}]}
    assert [f for f, _ in _causes(new, old=old)] == ["spec.ingress[0].from[0].ipBlock.cidr"]
    # the operator is never let through
    old["podSelector"]["matchExpressions"][0]["operator"] = "Bogus"
    assert _causes(old, old=old)
