"""CRD checks and structural schemas: prune, default, validate, publish."""

from __future__ import annotations

import copy

from atoll.api import crdschema

SCHEMA = {"type": "object", "properties": {
    "spec": {"type": "object", "required": ["size"], "properties": {
        "size": {"type": "integer", "minimum": 1, "maximum": 10},
        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
        "port": {"x-kubernetes-int-or-string": True},
        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "either": {"type": "string", "oneOf": [{"pattern": "^a"}, {"pattern": "^b"}]}}},
    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}

CRD = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
       "metadata": {"name": "widgets.example.com"},
       "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": True, "storage": True,
                              "schema": {"openAPIV3Schema": SCHEMA}}]}}


def fields(causes) -> list[str]:
    return [c.field for c in causes]


def test_prune_default_validate() -> None:
    s = crdschema.StructuralSchema(SCHEMA)
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
           "spec": {"size": 3, "junk": 1, "free": {"any": {"thing": 1}},
                    "labels": {"a": "b"}}, "extra": True}
    assert s.unknown_fields(obj) == ["spec.junk", "extra"]
    s.prune(obj)
    s.apply_defaults(obj)
    assert obj["spec"] == {"size": 3, "color": "red", "free": {"any": {"thing": 1}},
                           "labels": {"a": "b"}}
    assert "extra" not in obj and s.validate(obj) == []


def test_validation_messages_name_the_field() -> None:
    s = crdschema.StructuralSchema(SCHEMA)
    bad = {"spec": {"size": 99, "color": "green", "name": "ABCDEFG", "port": 1.5,
                    "tags": ["a", "a"], "labels": {"x": 1}, "either": "c"}}
    causes = s.validate(bad)
    assert set(fields(causes)) == {"spec.size", "spec.color", "spec.name", "spec.port",
                                   "spec.tags[1]", "spec.labels.x", "spec.either"}
    assert any("less than or equal to 10" in c.message for c in causes)
    assert fields(s.validate({"spec": {"size": "3"}})) == ["spec.size"]
    assert fields(s.validate({"spec": {}})) == ["spec.size"]
    assert s.validate({"spec": {"size": 1, "port": "http", "either": "abc"}}) == []


def test_check_crd() -> None:
    assert crdschema.check_crd(crdschema.default_crd(CRD)) == []
    wrong = copy.deepcopy(CRD)
    wrong["metadata"]["name"] = "wrong.example.com"
    assert fields(crdschema.check_crd(wrong)) == ["metadata.name"]
    untyped = copy.deepcopy(CRD)
    untyped["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["size"] = {"minimum": 1}
    assert fields(crdschema.check_crd(untyped)) == [
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type"]
    two_storage = copy.deepcopy(CRD)
    two_storage["spec"]["versions"].append(dict(two_storage["spec"]["versions"][0], name="v2"))
    assert "spec.versions" in fields(crdschema.check_crd(two_storage))
    bad_scope = copy.deepcopy(CRD)
    bad_scope["spec"]["scope"] = "Galaxy"
    assert fields(crdschema.check_crd(bad_scope)) == ["spec.scope"]
    assert fields(crdschema.check_crd({"spec": "nope"})) == ["spec"]


def test_defaults_and_openapi() -> None:
    d = crdschema.default_crd(CRD)
    assert d["spec"]["names"]["singular"] == "widget"
    assert d["spec"]["names"]["listKind"] == "WidgetList"
    assert crdschema.component_name("stable.example.com", "v1", "CronTab") == \
        "com.example.stable.v1.CronTab"
    schema, list_schema = crdschema.openapi_v3_for_crd_version(d, "v1")
    assert schema["properties"]["metadata"]["$ref"].endswith("meta.v1.ObjectMeta")
    assert schema["properties"]["spec"]["properties"]["size"]["type"] == "integer"
    assert list_schema["x-kubernetes-group-version-kind"][0]["kind"] == "WidgetList"
    assert "metadata" not in SCHEMA["properties"]  # the CRD's own schema is untouched
