"""A bounded fuzz of the decoders, patches and schema validation (issue 18's proof).

In process, hypothesis feeds ``http.decode``/``decode_patch`` YAML and JSON text made of
the pieces attacks are made of (anchors, aliases, merge keys, tags, deep brackets,
indentation), the three patch functions random documents and patches, and ``crdschema``
random schemas and values.  Whatever comes in, the answer is a value that encodes to JSON
within a size bound, or an ``ApiError`` with a 4xx code: never another exception.  A
short phase over HTTP sends the same kind of bodies to the real platform as an edit-only
tenant, with ``/readyz`` asked throughout.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atoll.api import crdschema, decoding, errors, schemas
from atoll.api import patch as patching
from atoll.apiserver import http
from tests.security.test_decoding import SSAR, ReadyzProbe, tenant  # noqa: F401 - a fixture

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
#: what a body of at most 3 MiB may decode to, encoded again (aliases expanded)
OUTPUT_BOUND = 2 * decoding.MAX_DECODED_BYTES
BODY_TYPES = ["application/json", "application/yaml", "text/plain", ""]
PATCH_TYPES = list(http.PATCH_BODY_TYPES)

# -- text made of YAML's sharp edges ----------------------------------------------------------
atoms = st.sampled_from([
    "a", "b", "lol", "1", "-1", "0x1F", "0o17", "1_000", "1e400", ".inf", ".nan", "~", "null",
    "true", "no", "2001-12-14", "12:30:45", "'q'", '"d\\u0041"', "!!str 1", "!!binary aGk=",
    "!!set {a}", "!!python/name:os.system", "!foo x", "9" * 30, "<<", "? x", "|", ">",
])
anchors = st.sampled_from(["a", "b", "c"])


@st.composite
def yaml_text(draw: Any) -> str:
    """A few lines mixing flow and block style, anchors, aliases and merge keys."""
    lines = []
    for i in range(draw(st.integers(1, 8))):
        kind = draw(st.integers(0, 6))
        if kind == 0:
            lines.append(f"k{i}: &{draw(anchors)} [" + ", ".join(
                draw(st.lists(atoms, max_size=9))) + "]")
        elif kind == 1:
            ref = draw(anchors)
            lines.append(f"k{i}: [" + ", ".join([f"*{ref}"] * draw(st.integers(1, 9))) + "]")
        elif kind == 2:
            lines.append(f"k{i}: {{<<: *{draw(anchors)}, x: {draw(atoms)}}}")
        elif kind == 3:
            n = draw(st.integers(1, 1200))
            lines.append(f"k{i}: " + "[" * n + "]" * draw(st.sampled_from([n, n - 1, 0])))
        elif kind == 4:
            lines.append(f"k{i}:" + "".join(f"\n{' ' * (d + 1)}n{d}:" for d in range(
                draw(st.integers(1, 60)))) + f" {draw(atoms)}")
        elif kind == 5:
            lines.append(f"k{i}: &{draw(anchors)} {{m: *{draw(anchors)}}}")
        else:
            lines.append(f"{draw(atoms)}: {draw(atoms)}")
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n---\nx: 1\n", "\n..."]))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) |
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) |
    st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=30)


def expect_decoded_or_4xx(fn: Any, *args: Any) -> Any:
    try:
        value = fn(*args)
    except errors.ApiError as exc:
        assert 400 <= exc.code < 500, (exc.code, exc.message)
        return None
    encoded = orjson.dumps(value)
    assert len(encoded) <= OUTPUT_BOUND
    return value


@FAST
@given(text=yaml_text(), ctype=st.sampled_from(BODY_TYPES))
def test_yaml_like_text_decodes_or_is_a_4xx(text: str, ctype: str) -> None:
    expect_decoded_or_4xx(http.decode, text.encode(), ctype)


@FAST
@given(text=yaml_text(), ctype=st.sampled_from(PATCH_TYPES))
def test_patch_bodies_decode_or_are_a_4xx(text: str, ctype: str) -> None:
    expect_decoded_or_4xx(http.decode_patch, text.encode(), ctype)


@FAST
@given(data=st.binary(max_size=300), ctype=st.sampled_from(BODY_TYPES + PATCH_TYPES))
def test_random_bytes_decode_or_are_a_4xx(data: bytes, ctype: str) -> None:
    decode = http.decode_patch if ctype in http.PATCH_BODY_TYPES else http.decode
    expect_decoded_or_4xx(decode, data, ctype)


@FAST
@given(value=json_values)
def test_json_and_yaml_round_trip(value: Any) -> None:
    """Hostile-proof, and still faithful: JSON and YAML of a value decode back to it."""
    doc = {"v": value}
    assert http.decode(orjson.dumps(doc), "application/json") == doc
    assert http.decode(yaml.safe_dump(doc).encode(), "application/yaml") == \
        json.loads(json.dumps(doc))


@pytest.mark.parametrize("levels", [99, 100, 101, 500, 1100])
def test_nesting_at_and_past_the_bounds(levels: int) -> None:
    for text in ('{"a":' * levels + "1" + "}" * levels, "[" * levels + "]" * levels,
                 "a:" + "".join(f"\n{' ' * d}a:" for d in range(1, levels)) + " 1\n"):
        for ctype in ("application/json", "application/yaml"):
            value = expect_decoded_or_4xx(http.decode, text.encode(), ctype)
            assert (value is not None) == (levels <= decoding.MAX_OBJECT_DEPTH), (levels, ctype)


# -- patches -------------------------------------------------------------------------------------
ops = st.fixed_dictionaries({
    "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]),
    "path": st.sampled_from(["", "/", "/a", "/a/b", "/l/0", "/l/-", "/x~1y", "/a/0/b"]),
}, optional={"value": json_values, "from": st.sampled_from(["", "/a", "/l", "/l/0", "/zz"])})


@FAST
@given(doc=json_values, patch=json_values)
def test_merge_patches_apply_or_are_a_4xx(doc: Any, patch: Any) -> None:
    expect_decoded_or_4xx(patching.merge_patch, doc, patch)
    pod = schemas.schema_for("", "v1", "Pod")
    if isinstance(patch, dict):
        expect_decoded_or_4xx(patching.strategic_merge_patch, doc, patch, pod)
        expect_decoded_or_4xx(patching.strategic_merge_patch, doc, patch, None)


@FAST
@given(doc=json_values, patch=st.lists(ops, max_size=6) | json_values)
def test_json_patches_apply_or_are_a_4xx(doc: Any, patch: Any) -> None:
    expect_decoded_or_4xx(patching.json_patch, {"a": doc, "l": [doc]}, patch)


def test_strategic_lists_merge_in_linear_time() -> None:
    """Merge keys, primitive deletions and $retainKeys on 20,000-element lists."""
    import time

    n = 20_000
    doc = {"spec": {"containers": [{"name": f"c{i}", "image": "x"} for i in range(n)],
                    "finalizers": [f"f{i}" for i in range(n)]}}
    patch = {"spec": {"containers": [{"name": f"c{i}", "image": "y"} for i in range(0, n, 2)] +
                      [{"name": f"c{i}", "$patch": "delete"} for i in range(1, n, 2)],
                      "$deleteFromPrimitiveList/finalizers": [f"f{i}" for i in range(n)]}}
    start = time.monotonic()
    out = patching.strategic_merge_patch(doc, patch, schemas.schema_for("", "v1", "Pod"))
    assert time.monotonic() - start < 5
    assert len(out["spec"]["containers"]) == n // 2
    assert all(c["image"] == "y" for c in out["spec"]["containers"])


# -- schemas -------------------------------------------------------------------------------------
patterns = st.sampled_from(["^(a+)+$", "(a|aa)*b", "(?=a)", r"(a)\1", "[", "^[a-z]+$", "a{2,3}",
                            r"\d+", "(?<n>x)", "(?i)abc", ".*.*.*=.*"])
schema_nodes = st.recursive(
    st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "number", "boolean"])},
                          optional={"pattern": patterns, "enum": st.lists(json_values,
                                                                          max_size=3),
                                    "maxLength": st.integers(0, 5), "minimum": st.integers(),
                                    "nullable": st.booleans()}),
    lambda children: st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(
            st.sampled_from(["a", "b", "s"]), children, max_size=3)},
        optional={"x-kubernetes-preserve-unknown-fields": st.booleans(),
                  "required": st.lists(st.sampled_from(["a", "b"]), max_size=2)})
    | st.fixed_dictionaries({"type": st.just("array"), "items": children},
                            optional={"x-kubernetes-list-type": st.sampled_from(
                                ["atomic", "set", "map"]),
                                "x-kubernetes-list-map-keys": st.just(["a"])}),
    max_leaves=8)


@FAST
@given(schema=schema_nodes, value=json_values)
def test_schemas_check_and_validate_without_exceptions(schema: dict[str, Any],
                                                       value: Any) -> None:
    root = {"type": "object", "properties": {"spec": schema}}
    causes = crdschema.check_structural(root, "spec.versions[0].schema.openAPIV3Schema")
    assert all(isinstance(c, errors.Cause) for c in causes)
    compiled = crdschema.StructuralSchema(root)
    obj = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "n"}, "spec": value}
    compiled.unknown_fields(obj)
    compiled.prune(obj)
    compiled.apply_defaults(obj)
    assert all(isinstance(c, errors.Cause) for c in compiled.validate(obj))


def test_hostile_patterns_validate_in_linear_time() -> None:
    import time

    schema = crdschema.StructuralSchema({"type": "object", "properties": {
        p: {"type": "string", "pattern": p} for p in ("^(a+)+$", "(a|aa)*b", "^(a|a?)+$",
                                                       "(.*a){12}")}})
    obj = {p: "a" * 50_000 + "!" for p in schema.raw["properties"]}
    start = time.monotonic()
    causes = schema.validate(obj)
    assert time.monotonic() - start < 1
    assert len(causes) >= 3


# -- over HTTP -----------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=yaml_text(), ctype=st.sampled_from(["application/json", "application/yaml",
                                                "text/plain"]),
       where=st.sampled_from(["configmaps", "ssar"]))
def _http_case(client: Any, ns: str, text: str, ctype: str, where: str) -> None:
    head = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: fz-}\n"
            if where == "configmaps" else
            "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\n")
    path = f"/api/v1/namespaces/{ns}/configmaps" if where == "configmaps" else SSAR
    code, data, _ = client.call("POST", path, (head + text).encode(), ctype)
    assert code < 500, (code, data[:300], text[:200])
    assert len(data) <= OUTPUT_BOUND
    if code >= 400:
        status = json.loads(data)
        assert status["kind"] == "Status" and status["code"] == code


def test_fuzz_over_http_as_a_tenant(tenant) -> None:
    ns, mallory, _ = tenant
    with ReadyzProbe(mallory) as probe:
        _http_case(mallory, ns)
    probe.assert_responsive()
