"""node.k8s.io/v1 RuntimeClass: upstream's validation and ``kubectl get runtimeclass`` columns."""

from __future__ import annotations

from typing import Any

import pytest

from atoll.api import printers, resources
from atoll.api.resources.node_v1 import RUNTIMECLASSES, RuntimeClassStrategy
from atoll.apiserver.runtimebootstrap import pod_vm_class

NOW = 1_700_000_000.0
KEY = "node.k8s.io/RuntimeClass"


def rc(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "kata", "creationTimestamp": "2023-11-14T22:10:20Z"},
            "handler": "kata", **fields}


def causes(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c.field, c.message) for c in RuntimeClassStrategy().validate(RUNTIMECLASSES, obj)]


def test_served_cluster_scoped_in_node_k8s_io() -> None:
    rt = resources.builtin_type("node.k8s.io", "runtimeclasses")
    assert (rt.group, rt.version, rt.kind, rt.namespaced) == ("node.k8s.io", "v1",
                                                              "RuntimeClass", False)
    assert resources.strategy_for(KEY) is not None


def test_columns_and_cells() -> None:
    assert [c["name"] for c in printers.column_definitions(KEY)] == ["Name", "Handler", "Age"]
    assert printers.row_cells(KEY, rc(), NOW) == ["kata", "kata", "3m"]


def test_a_valid_class_with_overhead_and_scheduling() -> None:
    obj = rc(overhead={"podFixed": {"cpu": "250m", "memory": "160Mi", "example.com/gpu": "0"}},
             scheduling={"nodeSelector": {"atoll.dev/pod-vms": "true"},
                         "tolerations": [{"key": "vm", "operator": "Exists",
                                          "effect": "NoSchedule"}]})
    assert causes(obj) == []
    assert causes(pod_vm_class()) == []


@pytest.mark.parametrize("handler, message", [
    ("", 'Invalid value: "": a lowercase RFC 1123 label must consist of lower case alphanumeric '
         "characters or '-', and must start and end with an alphanumeric character (e.g. "
         "'my-name',  or '123-abc', regex used for validation is "
         "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    ("Kata", None),
    ("kata.v2", 'Invalid value: "kata.v2": must not contain dots'),
])
def test_handler_is_a_dns_label(handler: str, message: str | None) -> None:
    found = causes(rc(handler=handler))
    assert [f for f, _ in found] == ["handler"]
    if message:
        assert found[0][1] == message


def test_handler_missing_is_refused_as_empty() -> None:
    obj = rc()
    del obj["handler"]
    assert [f for f, _ in causes(obj)] == ["handler"]


def test_handler_is_immutable() -> None:
    out = RuntimeClassStrategy().validate_transition(RUNTIMECLASSES, rc(), rc(handler="runc"))
    assert [(c.field, c.message) for c in out] == [
        ("handler", 'Invalid value: "runc": field is immutable')]
    assert RuntimeClassStrategy().validate_transition(
        RUNTIMECLASSES, rc(), rc(overhead={"podFixed": {"cpu": "1"}})) == []


def test_overhead_quantities_as_container_limits() -> None:
    found = causes(rc(overhead={"podFixed": {"cpu": "-1", "memory": "lots", "widgets": "1"}}))
    assert found == [
        ("overhead.limits[cpu]", 'Invalid value: "-1": must be greater than or equal to 0'),
        ("overhead.limits[memory]", 'Invalid value: "lots": must be a quantity'),
        ("overhead.limits[widgets]",
         'Invalid value: "widgets": must be a standard resource for containers'),
    ]


def test_scheduling_node_selector_and_tolerations() -> None:
    found = causes(rc(scheduling={
        "nodeSelector": {"bad key!": "x"},
        "tolerations": [{"key": "a", "operator": "Equal", "value": "1", "effect": "NoSchedule"},
                        {"key": "a", "operator": "Equal", "value": "1", "effect": "NoSchedule"},
                        {"operator": "Equal", "value": "x"},
                        {"key": "b", "operator": "Exists", "value": "y"},
                        {"key": "c", "operator": "Near"},
                        {"key": "d", "operator": "Exists", "effect": "NoSchedule",
                         "tolerationSeconds": 5},
                        {"key": "e", "operator": "Exists", "effect": "Sometimes"}]}))
    fields = [f for f, _ in found]
    assert fields[0] == "scheduling.nodeSelector"
    assert fields[1:] == ["scheduling.tolerations[1]", "scheduling.tolerations[2].operator",
                          "scheduling.tolerations[3].operator",
                          "scheduling.tolerations[4].operator",
                          "scheduling.tolerations[5].effect",
                          "scheduling.tolerations[6].effect"]
    messages = dict(found[1:])
    assert messages["scheduling.tolerations[1]"].startswith("Duplicate value:")
    assert "operator must be Exists when `key` is empty" in \
        messages["scheduling.tolerations[2].operator"]
    assert "value must be empty when `operator` is 'Exists'" in \
        messages["scheduling.tolerations[3].operator"]
    assert messages["scheduling.tolerations[4].operator"] == \
        'Unsupported value: "Near": supported values: "Equal", "Exists"'
    assert "effect must be 'NoExecute' when `tolerationSeconds` is set" in \
        messages["scheduling.tolerations[5].effect"]
