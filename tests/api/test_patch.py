"""JSON patch, merge patch and strategic merge patch against upstream's schemas."""

from __future__ import annotations

import copy

import pytest

from atoll.api import errors, patch, schemas

DEPLOY = schemas.schema_for("apps", "v1", "Deployment")
POD = schemas.schema_for("", "v1", "Pod")


def deployment() -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d",
            "finalizers": ["a"]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "1"],
                 "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "nginx"}]}}}}


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def test_merge_key_lists_merge_and_keep_other_fields() -> None:
    original = deployment()
    before = copy.deepcopy(original)
    out = patch.strategic_merge_patch(original, {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "env": [{"name": "B", "value": "2"}]}]}}}}, DEPLOY)
    assert original == before  # input untouched
    c = containers(out)
    assert [x["name"] for x in c] == ["c", "side"]
    assert c[0]["command"] == ["sleep", "1"]
    assert [e["name"] for e in c[0]["env"]] == ["A", "B"]


def test_directives() -> None:
    out = patch.strategic_merge_patch(deployment(), {"spec": {"template": {"spec": {
        "containers": [{"name": "side", "$patch": "delete"}]}}}}, DEPLOY)
    assert [x["name"] for x in containers(out)] == ["c"]
    out = patch.strategic_merge_patch(deployment(), {"spec": {"template": {"spec": {
        "containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}}, DEPLOY)
    assert containers(out) == [{"name": "only", "image": "x"}]
    out = patch.strategic_merge_patch(deployment(), {"metadata": {
        "$deleteFromPrimitiveList/finalizers": ["a"]}}, DEPLOY)
    assert out["metadata"]["finalizers"] == []
    out = patch.strategic_merge_patch(deployment(), {"metadata": {"finalizers": ["b"]}}, DEPLOY)
    assert out["metadata"]["finalizers"] == ["a", "b"]  # a set: union
    out = patch.strategic_merge_patch(deployment(), {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "side"}, {"name": "c"}]}}}}, DEPLOY)
    assert [x["name"] for x in containers(out)] == ["side", "c"]
    out = patch.strategic_merge_patch(deployment(), {"spec": {"template": {"$patch": "replace",
                                                                           "spec": {}}}}, DEPLOY)
    assert out["spec"]["template"] == {"spec": {}}


def test_retain_keys_and_null_deletes() -> None:
    original = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    out = patch.strategic_merge_patch(original, {"spec": {"strategy": {
        "$retainKeys": ["type"], "type": "Recreate"}}}, DEPLOY)
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    out = patch.strategic_merge_patch(original, {"spec": {"strategy": None}}, DEPLOY)
    assert out["spec"] == {}


def test_bad_strategic_patches_are_400() -> None:
    for bad in ({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
                {"$patch": "explode"}, {"metadata": {"$weird": 1}}):
        with pytest.raises(errors.BadRequest):
            patch.strategic_merge_patch(deployment(), bad, DEPLOY)
    deep: dict = {}
    node = deep
    for _ in range(200):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(errors.BadRequest):
        patch.strategic_merge_patch({}, deep, None)


def test_without_schema_lists_are_replaced() -> None:
    out = patch.strategic_merge_patch({"l": [1, 2], "m": {"a": 1}}, {"l": [3], "m": {"b": 2}},
                                      None)
    assert out == {"l": [3], "m": {"a": 1, "b": 2}}


def test_merge_patch_rfc7386() -> None:
    assert patch.merge_patch({"a": {"b": 1, "c": 2}, "l": [1]},
                             {"a": {"b": None, "d": 3}, "l": [2]}) == {"a": {"c": 2, "d": 3},
                                                                       "l": [2]}
    assert patch.merge_patch({"a": 1}, "x") == "x"


def test_json_patch() -> None:
    doc = {"data": {"k": "v"}}
    assert patch.json_patch(doc, [{"op": "add", "path": "/data/j", "value": "2"}]) == \
        {"data": {"k": "v", "j": "2"}}
    assert doc == {"data": {"k": "v"}}
    with pytest.raises(errors.Invalid):
        patch.json_patch(doc, [{"op": "remove", "path": "/data/nope"}])
    with pytest.raises(errors.Invalid):
        patch.json_patch(doc, [{"op": "test", "path": "/data/k", "value": "x"}])
    for bad in ({"op": "add"}, [{"op": "frobnicate", "path": "/a"}], [1], [{"path": "/a"}]):
        with pytest.raises(errors.BadRequest):
            patch.json_patch(doc, bad)
