"""Name and ObjectMeta validation: upstream messages with field paths, never exceptions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from atoll.api import errors, validation

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    r"for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


def messages(causes: list[errors.Cause]) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


# -- name checks ------------------------------------------------------------------------------------
def test_dns1123_subdomain() -> None:
    assert validation.is_dns1123_subdomain("example.com") == []
    assert validation.is_dns1123_subdomain("Bad_Name") == [SUBDOMAIN_MSG]
    assert validation.is_dns1123_subdomain("a" * 254) == ["must be no more than 253 characters"]


def test_dns1123_label() -> None:
    assert validation.is_dns1123_label("my-name") == []
    assert validation.is_dns1123_label("a.b") == ["must not contain dots"]
    assert validation.is_dns1123_label("-a") == [LABEL_MSG]
    assert validation.is_dns1123_label("a" * 64) == ["must be no more than 63 characters"]


def test_dns1035_label() -> None:
    assert validation.is_dns1035_label("svc-1") == []
    (msg,) = validation.is_dns1035_label("1svc")
    assert msg.startswith("a DNS-1035 label must consist of lower case alphanumeric characters or "
                          "'-', start with an alphabetic character")
    assert "(e.g. 'my-name',  or 'abc-123', regex used for validation is " \
           "'[a-z]([-a-z0-9]*[a-z0-9])?')" in msg


def test_qualified_name() -> None:
    assert validation.is_qualified_name("app") == []
    assert validation.is_qualified_name("example.com/App_1") == []
    assert validation.is_qualified_name("/a") == ["prefix part must be non-empty"]
    assert validation.is_qualified_name("Example.com/a")[0].startswith(
        "prefix part a lowercase RFC 1123 subdomain")
    assert validation.is_qualified_name("") == [
        "name part must be non-empty",
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
        "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
        "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"]
    assert validation.is_qualified_name("a" * 64)[0] == "name part must be no more than 63 characters"
    (msg,) = validation.is_qualified_name("a/b/c")
    assert msg.startswith("a qualified name must consist of") and \
        msg.endswith("with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")


def test_label_value() -> None:
    assert validation.is_valid_label_value("") == []
    assert validation.is_valid_label_value("v1.2_x") == []
    assert validation.is_valid_label_value("-x")[0].startswith(
        "a valid label must be an empty string or consist of alphanumeric characters")
    assert validation.is_valid_label_value("x" * 64)[0] == "must be no more than 63 characters"


def test_path_segment_names() -> None:
    assert validation.is_valid_path_segment_name("system:admin") == []
    assert validation.is_valid_path_segment_name("..") == ["may not be '..'"]
    assert validation.is_valid_path_segment_name("a/b%") == ["may not contain '/'",
                                                              "may not contain '%'"]


# -- ObjectMeta -------------------------------------------------------------------------------------
def test_valid_meta_has_no_causes() -> None:
    meta = {"name": "web", "namespace": "default", "labels": {"app": "web"},
            "annotations": {"example.com/Note": "anything goes here"},
            "finalizers": ["example.com/cleanup", "kubernetes"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                 "uid": "1", "controller": True}]}
    assert validation.validate_object_meta(meta, namespaced=True, name_rule="subdomain") == []


def test_meta_must_be_object() -> None:
    (cause,) = validation.validate_object_meta("x", namespaced=True)
    assert cause.field == "metadata"


def test_name_required() -> None:
    assert messages(validation.validate_object_meta({"namespace": "d"}, namespaced=True)) == [
        "metadata.name: Required value: name or generateName is required"]
    assert validation.validate_object_meta({"generateName": "web-", "namespace": "d"},
                                           namespaced=True) == []


def test_invalid_name_per_rule() -> None:
    (cause,) = validation.validate_object_meta({"name": "Bad_Name", "namespace": "d"},
                                               namespaced=True, name_rule="subdomain")
    assert cause.field == "metadata.name"
    assert cause.reason == "FieldValueInvalid"
    assert cause.message == f'Invalid value: "Bad_Name": {SUBDOMAIN_MSG}'
    (cause,) = validation.validate_object_meta({"name": "a.b"}, namespaced=False, name_rule="label")
    assert cause.message == 'Invalid value: "a.b": must not contain dots'
    assert validation.validate_object_meta({"name": "1abc"}, namespaced=False,
                                           name_rule="dns1035")
    assert validation.validate_object_meta({"name": "system:node:x"}, namespaced=False,
                                           name_rule="path-segment") == []


def test_generate_name_prefix() -> None:
    assert validation.validate_object_meta({"generateName": "web-", "namespace": "d"},
                                           namespaced=True) == []
    (cause,) = validation.validate_object_meta({"generateName": "Web-", "namespace": "d"},
                                               namespaced=True)
    assert cause.field == "metadata.generateName"


def test_namespace_rules() -> None:
    assert messages(validation.validate_object_meta({"name": "a"}, namespaced=True)) == [
        "metadata.namespace: Required value"]
    (cause,) = validation.validate_object_meta({"name": "a", "namespace": "Bad"}, namespaced=True)
    assert cause.field == "metadata.namespace" and cause.message.startswith('Invalid value: "Bad"')
    assert messages(validation.validate_object_meta({"name": "a", "namespace": "x"},
                                                    namespaced=False)) == [
        "metadata.namespace: Forbidden: not allowed on this type"]
    assert validation.validate_object_meta({"name": "a", "namespace": ""}, namespaced=False) == []


def test_labels() -> None:
    causes = validation.validate_object_meta(
        {"name": "a", "labels": {"bad key": "ok", "k": "bad value"}}, namespaced=False)
    assert [c.field for c in causes] == ["metadata.labels", "metadata.labels"]
    assert causes[0].message.startswith('Invalid value: "bad key": name part must consist')
    assert causes[1].message.startswith('Invalid value: "bad value": a valid label must be')
    wrong = validation.validate_object_meta({"name": "a", "labels": {"k": 1}}, namespaced=False)
    assert [c.field for c in wrong] == ["metadata.labels[k]"]
    assert validation.validate_object_meta({"name": "a", "labels": ["x"]}, namespaced=False)


def test_annotations() -> None:
    assert validation.validate_object_meta({"name": "a", "annotations": {"Mixed.Case/Key": "v"}},
                                           namespaced=False) == []
    causes = validation.validate_object_meta(
        {"name": "a", "annotations": {"k": "x" * (256 * 1024)}}, namespaced=False)
    assert messages(causes) == ["metadata.annotations: Too long: may not be more than 262144 bytes"]
    assert causes[0].reason == "FieldValueTooLong"
    bad = validation.validate_object_meta({"name": "a", "annotations": {"a b": "v"}},
                                          namespaced=False)
    assert bad[0].field == "metadata.annotations"


def test_finalizers() -> None:
    ok = {"name": "a", "finalizers": ["kubernetes", "orphan", "foregroundDeletion", "x.io/y"]}
    causes = validation.validate_object_meta(ok, namespaced=False)
    assert messages(causes) == ['metadata.finalizers: Invalid value: "finalizers": finalizer '
                                "orphan and foregroundDeletion cannot be both set"]
    causes = validation.validate_object_meta({"name": "a", "finalizers": ["custom"]},
                                             namespaced=False)
    assert messages(causes) == ['metadata.finalizers[0]: Invalid value: "custom": name is neither a '
                                "standard finalizer name nor is it fully qualified"]
    assert validation.validate_object_meta({"name": "a", "finalizers": ["custom"]},
                                           namespaced=False, kube_finalizers=False) == []
    bad = validation.validate_object_meta({"name": "a", "finalizers": ["bad name"]},
                                          namespaced=False)
    assert bad[0].field == "metadata.finalizers"


def test_owner_references() -> None:
    meta = {"name": "a", "ownerReferences": [{"kind": "", "name": "n"}]}
    assert messages(validation.validate_object_meta(meta, namespaced=False)) == [
        'metadata.ownerReferences.apiVersion: Invalid value: "": version must not be empty',
        'metadata.ownerReferences.kind: Invalid value: "": kind must not be empty',
        'metadata.ownerReferences.uid: Invalid value: "": uid must not be empty',
    ]
    two = {"name": "a", "ownerReferences": [
        {"apiVersion": "v1", "kind": "A", "name": "x", "uid": "1", "controller": True},
        {"apiVersion": "v1", "kind": "B", "name": "y", "uid": "2", "controller": True}]}
    (cause,) = validation.validate_object_meta(two, namespaced=False)
    assert cause.field == "metadata.ownerReferences"
    assert cause.message.endswith('Only one reference can have Controller set to true. Found "true" '
                                  "in references for A/x and B/y")
    event = {"name": "a", "ownerReferences": [{"apiVersion": "v1", "kind": "Event", "name": "e",
                                               "uid": "1"}]}
    (cause,) = validation.validate_object_meta(event, namespaced=False)
    assert "/v1, Kind=Event is disallowed from being an owner" in cause.message


def test_generation_must_not_be_negative() -> None:
    (cause,) = validation.validate_object_meta({"name": "a", "generation": -1}, namespaced=False)
    assert cause.message == "Invalid value: -1: must be greater than or equal to 0"


# -- updates ----------------------------------------------------------------------------------------
def test_update_immutable_fields() -> None:
    old = {"name": "a", "namespace": "d", "uid": "u1", "creationTimestamp": "2024-01-01T00:00:00Z"}
    assert validation.validate_update_meta(old, dict(old)) == []
    assert validation.validate_update_meta(old, {"name": "a"}) == []  # unsent fields are kept
    causes = validation.validate_update_meta(old, {"name": "b", "namespace": "e", "uid": "u2",
                                                   "creationTimestamp": "2020-01-01T00:00:00Z"})
    assert messages(causes) == [
        'metadata.name: Invalid value: "b": field is immutable',
        'metadata.namespace: Invalid value: "e": field is immutable',
        'metadata.uid: Invalid value: "u2": field is immutable',
    ]  # creationTimestamp is copied from the stored object, as upstream's BeforeUpdate does
    assert validation.validate_update_meta(old, "nope")[0].field == "metadata"


# -- hostile input ----------------------------------------------------------------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=4),
    max_leaves=20)
_META_KEYS = st.sampled_from(["name", "generateName", "namespace", "labels", "annotations",
                              "finalizers", "ownerReferences", "generation", "uid"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(_JSON, st.dictionaries(_META_KEYS, _JSON, max_size=9)), st.booleans(),
       st.sampled_from(["subdomain", "label", "dns1035", "path-segment", "unknown"]))
def test_validate_object_meta_never_raises(meta: object, namespaced: bool, rule: str) -> None:
    causes = validation.validate_object_meta(meta, namespaced=namespaced, name_rule=rule)
    assert all(isinstance(c, errors.Cause) for c in causes)
    validation.validate_update_meta(meta, meta)
    validation.validate_update_meta({"name": "a"}, meta)


def test_pod_resource_quantities_are_checked() -> None:
    from atoll.api.resources.core_v1_pods import _validate_resources

    assert _validate_resources({"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}, "r") == []
    causes = _validate_resources({"requests": {"cpu": "lots", "memory": "2Gi"},
                                  "limits": {"memory": "1Gi"}}, "spec.containers[0].resources")
    fields = sorted(c.field for c in causes)
    assert fields == ["spec.containers[0].resources.requests[cpu]",
                      "spec.containers[0].resources.requests[memory]"]


def test_binary_kilo_quantities() -> None:
    """Node memory comes as Ki (capital K): it must parse, as upstream's does."""
    from atoll.api import quantity

    assert quantity.parse("23635520Ki") == 23635520 * 1024
    assert quantity.parse("1k") == 1000
    for bad in ("1K", "1ki"):
        with pytest.raises(ValueError):
            quantity.parse(bad)
