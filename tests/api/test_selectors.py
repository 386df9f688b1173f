"""Label and field selectors: grammar, matching, upstream error messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from atoll.api import errors, selectors

LABELS = {"app": "web", "tier": "front", "n": "7", "example.com/team": "blue"}


# -- label selectors: each operator ----------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("app=web", True),
    ("app==web", True),
    ("app=db", False),
    ("app!=db", True),
    ("app!=web", False),
    ("missing!=x", True),            # != matches objects lacking the key
    ("tier in (front,back)", True),
    ("tier in (back)", False),
    ("tier notin (back)", True),
    ("missing notin (a,b)", True),   # notin matches objects lacking the key
    ("tier notin (front)", False),
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("n>5", True),
    ("n>7", False),
    ("n<8", True),
    ("n<7", False),
    ("missing>1", False),
    ("app>1", False),                # a non-integer label never compares
    ("example.com/team=blue", True),
    ("app=web,tier=front", True),
    ("app=web,tier=back", False),
    ("  app  =  web ,  tier in ( front , back )  ", True),
    ("", True),
])
def test_label_operators(text: str, expected: bool) -> None:
    assert selectors.parse_label_selector(text).matches(LABELS) is expected


def test_empty_selector_and_none_labels() -> None:
    sel = selectors.parse_label_selector("")
    assert sel.empty and sel.matches(None)
    assert not selectors.parse_label_selector("a").empty
    assert selectors.parse_label_selector("!a").matches(None)
    assert not selectors.parse_label_selector("a=b").matches(None)


def test_empty_values() -> None:
    assert selectors.parse_label_selector("a=").matches({"a": ""})
    assert selectors.parse_label_selector("a in ()").matches({"a": ""})
    assert selectors.parse_label_selector("a in (x,)").matches({"a": ""})
    assert selectors.parse_label_selector("a in (,x)").matches({"a": "x"})


def test_in_and_notin_are_values_after_an_operator() -> None:
    assert selectors.parse_label_selector("a=in").matches({"a": "in"})
    assert selectors.parse_label_selector("a in (notin)").matches({"a": "notin"})


def test_string_form_is_sorted_by_key() -> None:
    sel = selectors.parse_label_selector("z=1,a in (y,x),!m,k,n>3")
    assert str(sel) == "a in (x,y),k,!m,n>3,z=1"


@pytest.mark.parametrize("text, message", [
    ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    ("a in b", "unable to parse requirement: found 'b' expected: '('"),
    ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a in (x y)", "unable to parse requirement: found 'y', expected: ',' or ')'"),
    ("a=(", "unable to parse requirement: found '(', expected: identifier"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("a,", "found '', expected: identifier after ','"),
    (",a", "found ',', expected: !, identifier, or 'end of string'"),
    ("=a", "found '=', expected: !, identifier, or 'end of string'"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("k>x", "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' "
            "operators, the value must be an integer"),
])
def test_label_parse_errors(text: str, message: str) -> None:
    with pytest.raises(errors.BadRequest) as exc:
        selectors.parse_label_selector(text)
    assert exc.value.message == message
    assert exc.value.code == 400


def test_invalid_key_and_value_messages() -> None:
    with pytest.raises(errors.BadRequest) as exc:
        selectors.parse_label_selector("-a=b")
    assert exc.value.message.startswith('unable to parse requirement: <nil>: Invalid value: "-a": '
                                        "name part must consist of alphanumeric characters")
    with pytest.raises(errors.BadRequest) as exc:
        selectors.parse_label_selector("a=" + "x" * 64)
    assert "values[0][a]: Invalid value" in exc.value.message
    assert "must be no more than 63 characters" in exc.value.message
    with pytest.raises(errors.BadRequest):
        selectors.parse_label_selector("example.com/" + "k" * 64)
    with pytest.raises(errors.BadRequest):
        selectors.parse_label_selector("a/b/c=d")


# -- metav1.LabelSelector objects ------------------------------------------------------------------
def test_label_selector_from_dict() -> None:
    sel = selectors.label_selector_from_dict({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
            {"key": "app", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    })
    assert sel.matches(LABELS)
    assert not sel.matches({**LABELS, "legacy": "1"})
    assert not sel.matches({**LABELS, "env": "prod"})
    assert selectors.label_selector_from_dict({}).matches({"x": "y"})
    assert not selectors.label_selector_from_dict(None).matches({})


@pytest.mark.parametrize("sel, message", [
    ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
     '"Gt" is not a valid label selector operator'),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
     "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     'values: Invalid value: []string{"x"}: values set must be empty for exists and does not '
     "exist"),
    ({"matchLabels": {"bad key": "v"}}, 'key: Invalid value: "bad key"'),
    ({"matchLabels": "nope"}, "matchLabels"),
])
def test_label_selector_from_dict_errors(sel: dict, message: str) -> None:
    with pytest.raises(errors.BadRequest) as exc:
        selectors.label_selector_from_dict(sel)
    assert message in exc.value.message


def test_selector_to_string() -> None:
    assert selectors.selector_to_string({
        "matchLabels": {"app": "x"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                             {"key": "gone", "operator": "DoesNotExist"}],
    }) == "app=x,!gone,tier in (a,b)"
    assert selectors.selector_to_string({}) == ""
    assert selectors.format_label_selector(None) == "<none>"
    assert selectors.format_label_selector({"matchExpressions": [{"operator": "Bogus"}]}) == "<error>"


def test_validate_label_selector_causes() -> None:
    causes = selectors.validate_label_selector(
        {"matchLabels": {"a": "b"}, "matchExpressions": [
            {"key": "k", "operator": "In"},
            {"key": "k", "operator": "Exists", "values": ["v"]},
            {"key": "k", "operator": "Near"}]}, "spec.selector")
    fields = [c.field for c in causes]
    assert fields == ["spec.selector.matchExpressions[0].values",
                      "spec.selector.matchExpressions[1].values",
                      "spec.selector.matchExpressions[2].operator"]


# -- field selectors --------------------------------------------------------------------------------
def test_field_selector_operators() -> None:
    sel = selectors.parse_field_selector("metadata.name=web,status.phase!=Failed,spec.nodeName==n1")
    assert sel.fields == {"metadata.name", "status.phase", "spec.nodeName"}
    assert sel.matches({"metadata.name": "web", "status.phase": "Running", "spec.nodeName": "n1"})
    assert not sel.matches({"metadata.name": "web", "status.phase": "Failed", "spec.nodeName": "n1"})
    assert not sel.matches({"metadata.name": "db", "status.phase": "Running", "spec.nodeName": "n1"})
    assert sel.exact_value("metadata.name") == "web"
    assert sel.exact_value("spec.nodeName") == "n1"
    assert sel.exact_value("status.phase") is None
    assert ("status.phase", "!=", "Failed") in sel.requirements


def test_field_selector_missing_field_is_empty_string() -> None:
    assert selectors.parse_field_selector("spec.nodeName=").matches({})
    assert selectors.parse_field_selector("spec.nodeName!=x").matches({})


def test_field_selector_escapes() -> None:
    sel = selectors.parse_field_selector(r"metadata.name=a\,b\=c\\d,x=y")
    assert sel.exact_value("metadata.name") == "a,b=c\\d"
    assert sel.matches({"metadata.name": "a,b=c\\d", "x": "y"})


def test_field_selector_empty_terms() -> None:
    assert selectors.parse_field_selector("").empty
    assert selectors.parse_field_selector(",,").empty


@pytest.mark.parametrize("text, message", [
    ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
    ("a=b=c", "invalid field selector: unescaped character in value: ="),
    (r"a=b\x", "invalid field selector: invalid escape sequence: \\x"),
    ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
])
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(errors.BadRequest) as exc:
        selectors.parse_field_selector(text)
    assert exc.value.message == message


# -- selectable fields ----------------------------------------------------------------------------
def test_pod_field_set() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"},
           "spec": {"nodeName": "n1", "restartPolicy": "Always", "hostNetwork": True},
           "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]}}
    fields = selectors.field_set("/Pod", pod)
    assert fields["metadata.name"] == "p" and fields["metadata.namespace"] == "ns"
    assert fields["spec.nodeName"] == "n1"
    assert fields["spec.hostNetwork"] == "true"
    assert fields["status.podIP"] == "10.0.0.5"
    assert fields["spec.schedulerName"] == ""
    assert selectors.field_set("/Pod", {"metadata": {"name": "q"}})["spec.hostNetwork"] == "false"


def test_kind_field_sets() -> None:
    assert selectors.field_set("/Secret", {"type": "Opaque"})["type"] == "Opaque"
    assert selectors.field_set("/Node", {"spec": {"unschedulable": True}})["spec.unschedulable"] == "true"
    assert selectors.field_set("/Namespace", {"status": {"phase": "Active"}})["status.phase"] == "Active"
    # JSON omits zero counts; upstream formats the Go zero value
    assert selectors.field_set("apps/ReplicaSet", {"status": {}})["status.replicas"] == "0"
    assert selectors.field_set("batch/Job", {"status": {"succeeded": 2}})["status.successful"] == "2"
    csr = selectors.field_set("certificates.k8s.io/CertificateSigningRequest",
                              {"spec": {"signerName": "kubernetes.io/kubelet-serving"}})
    assert csr["spec.signerName"] == "kubernetes.io/kubelet-serving"
    ev = selectors.field_set("/Event", {"involvedObject": {"kind": "Pod", "name": "p"},
                                        "reason": "Started", "source": {"component": "kubelet"},
                                        "type": "Normal"})
    assert ev["involvedObject.kind"] == "Pod" and ev["source"] == "kubelet"
    assert ev["involvedObject.uid"] == ""
    ev2 = selectors.field_set("events.k8s.io/Event", {"regarding": {"name": "p"},
                                                      "reportingController": "kubelet"})
    assert ev2["regarding.name"] == "p" and ev2["reportingController"] == "kubelet"


def test_supported_fields() -> None:
    assert "spec.nodeName" in selectors.supported_fields("/Pod")
    assert {"metadata.name", "metadata.namespace"} <= selectors.supported_fields("/ConfigMap")
    assert "spec.nodeName" not in selectors.supported_fields("/ConfigMap")
    assert "involvedObject.name" in selectors.supported_fields("/Event")
    assert "regarding.name" in selectors.supported_fields("events.k8s.io/Event")


def test_custom_field_set() -> None:
    obj = {"metadata": {"name": "c", "namespace": "n"},
           "spec": {"color": "red", "size": 3, "on": True}}
    fields = selectors.custom_field_set(obj, [".spec.color", ".spec.size", ".spec.on", ".spec.gone"])
    assert fields == {"metadata.name": "c", "metadata.namespace": "n", "spec.color": "red",
                      "spec.size": "3", "spec.on": "true", "spec.gone": ""}


# -- hostile input ----------------------------------------------------------------------------------
_SELECTOR_CHARS = st.text(alphabet=st.sampled_from(list("ab=!(),<>  -_./\\0123456789in\t")) ,
                          max_size=40)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_SELECTOR_CHARS, st.text(max_size=40)))
def test_label_selector_fuzz_only_bad_request(text: str) -> None:
    try:
        sel = selectors.parse_label_selector(text)
    except errors.BadRequest:
        return
    sel.matches({"a": "1"})
    # the canonical form parses back to the same selector
    assert selectors.parse_label_selector(str(sel)) == sel


@settings(max_examples=400, deadline=None)
@given(st.one_of(_SELECTOR_CHARS, st.text(max_size=40)))
def test_field_selector_fuzz_only_bad_request(text: str) -> None:
    try:
        sel = selectors.parse_field_selector(text)
    except errors.BadRequest:
        return
    sel.matches({"a": "b"})
