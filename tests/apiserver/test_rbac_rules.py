"""RBAC rule matching and the escalation check, as pure functions."""

from __future__ import annotations

from atoll.apiserver.attributes import Attributes, from_request
from atoll.apiserver.authn import UserInfo
from atoll.apiserver.rbac import Rule, covers

ALICE = UserInfo("alice", groups=("devs", "system:authenticated"))


def attrs(verb: str, resource: str, *, group: str = "", sub: str = "", name: str = "",
          ns: str = "a") -> Attributes:
    return Attributes(ALICE, verb, True, group, "v1", resource, sub, ns, name)


def test_verbs_groups_resources_and_wildcards() -> None:
    rule = Rule(("get", "list"), ("",), ("pods",))
    assert rule.allows(attrs("get", "pods"))
    assert not rule.allows(attrs("delete", "pods"))
    assert not rule.allows(attrs("get", "pods", group="apps"))
    assert not rule.allows(attrs("get", "pods", sub="log"))
    assert Rule(("*",), ("*",), ("*",)).allows(attrs("delete", "pods", sub="exec"))
    assert Rule(("get",), ("",), ("*/status",)).allows(attrs("get", "pods", sub="status"))
    assert Rule(("get",), ("",), ("pods/log",)).allows(attrs("get", "pods", sub="log"))


def test_resource_names_do_not_cover_create_or_unnamed_requests() -> None:
    rule = Rule(("get", "create", "list"), ("",), ("configmaps",), ("one",))
    assert rule.allows(attrs("get", "configmaps", name="one"))
    assert not rule.allows(attrs("get", "configmaps", name="two"))
    assert not rule.allows(attrs("create", "configmaps", name="one"))
    assert not rule.allows(attrs("list", "configmaps"))


def test_non_resource_urls() -> None:
    rule = Rule(("get",), non_resource_urls=("/healthz", "/apis/*"))
    assert rule.allows(Attributes(ALICE, "get", False, path="/healthz"))
    assert rule.allows(Attributes(ALICE, "get", False, path="/apis/apps/v1"))
    assert not rule.allows(Attributes(ALICE, "get", False, path="/metrics"))
    assert not rule.allows(attrs("get", "pods"))


def test_request_attributes_from_paths() -> None:
    a = from_request(ALICE, "GET", "/api/v1/namespaces/x/pods", {})
    assert (a.verb, a.resource, a.namespace) == ("list", "pods", "x")
    a = from_request(ALICE, "GET", "/api/v1/namespaces/x/pods", {"watch": "true"})
    assert a.verb == "watch"
    a = from_request(ALICE, "DELETE", "/apis/apps/v1/namespaces/x/deployments", {})
    assert (a.verb, a.api_group) == ("deletecollection", "apps")
    a = from_request(ALICE, "PATCH", "/api/v1/namespaces/x/pods/p/status", {})
    assert (a.verb, a.name, a.subresource) == ("patch", "p", "status")
    a = from_request(ALICE, "DELETE", "/api/v1/namespaces/x", {})
    assert (a.resource, a.name, a.namespace) == ("namespaces", "x", "x")
    a = from_request(ALICE, "GET", "/version", {})
    assert not a.resource_request and a.verb == "get"
    assert 'cannot list resource "pods" in API group "" in the namespace "x"' in \
        from_request(ALICE, "GET", "/api/v1/namespaces/x/pods", {}).describe()


def test_escalation_coverage() -> None:
    held = [Rule(("get", "list"), ("",), ("pods", "configmaps")),
            Rule(("*",), ("apps",), ("deployments",))]
    assert covers(held, [Rule(("get",), ("",), ("pods",))]) == []
    assert covers(held, [Rule(("create",), ("apps",), ("deployments",))]) == []
    missing = covers(held, [Rule(("get", "delete"), ("",), ("pods",))])
    assert missing == [Rule(("delete",), ("",), ("pods",))]
    assert covers(held, [Rule(("get",), non_resource_urls=("/metrics",))])
    named = [Rule(("get",), ("",), ("secrets",), ("a",))]
    assert covers(named, [Rule(("get",), ("",), ("secrets",), ("a",))]) == []
    assert covers(named, [Rule(("get",), ("",), ("secrets",))])
