"""Field ownership and server-side apply semantics."""

from __future__ import annotations

import pytest

from atoll.api import errors, managedfields as mf, schemas

CM = schemas.schema_for("", "v1", "ConfigMap")
DEPLOY = schemas.schema_for("apps", "v1", "Deployment")
NOW = "2026-11-24T00:00:00Z"


def cm(**data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}


def apply(live, config, manager, force=False, schema=CM):
    return mf.apply(live, config, manager=manager, force=force, schema=schema, api_version="v1",
                    now=NOW)


def owners(obj: dict) -> dict[str, dict]:
    return {e["manager"]: e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


def test_apply_records_fields_and_shares_equal_values() -> None:
    obj = apply(None, cm(a="1"), "one")
    assert owners(obj) == {"one": {"f:data": {"f:a": {}}}}
    obj = apply(obj, cm(a="1", b="2"), "two")
    assert obj["data"] == {"a": "1", "b": "2"}
    assert owners(obj)["two"] == {"f:data": {"f:a": {}, "f:b": {}}}
    assert owners(obj)["one"] == {"f:data": {"f:a": {}}}


def test_conflict_then_force() -> None:
    obj = apply(None, cm(a="1"), "one")
    with pytest.raises(errors.Conflict) as err:
        apply(obj, cm(a="2"), "two")
    assert str(err.value) == 'Apply failed with 1 conflict: conflict with "one" using v1: .data.a'
    assert err.value.causes[0].reason == "FieldManagerConflict"
    assert err.value.causes[0].field == ".data.a"
    obj = apply(obj, cm(a="2"), "two", force=True)
    assert obj["data"] == {"a": "2"}
    assert set(owners(obj)) == {"two"}  # "one" lost its only field


def test_dropped_fields_are_removed_unless_owned_by_others() -> None:
    obj = apply(None, cm(a="1", b="2"), "one")
    obj = apply(obj, cm(b="2"), "two")
    obj = apply(obj, cm(), "one")
    assert obj["data"] == {"b": "2"}  # a removed, b still owned by "two"


def test_keyed_lists_merge_per_item() -> None:
    def dep(*containers):
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"template": {"spec": {"containers": list(containers)}}}}
    obj = apply(None, dep({"name": "a", "image": "x"}), "one", schema=DEPLOY)
    obj = apply(obj, dep({"name": "b", "image": "y"}), "two", schema=DEPLOY)
    names = [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]
    assert names == ["a", "b"]
    fields = owners(obj)["two"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert fields == {'k:{"name":"b"}': {".": {}, "f:image": {}, "f:name": {}}}
    with pytest.raises(errors.Conflict) as err:
        apply(obj, dep({"name": "a", "image": "z"}), "two", schema=DEPLOY)
    assert '.spec.template.spec.containers[name="a"].image' in str(err.value)


def test_updates_take_ownership_of_changed_fields() -> None:
    obj = apply(None, cm(a="1"), "one")
    new = cm(a="2", b="3")
    new["metadata"]["managedFields"] = obj["metadata"]["managedFields"]
    managed = mf.track_update(obj, new, manager="editor", api_version="v1", now=NOW, schema=CM)
    by = {e["manager"]: e for e in managed}
    assert set(by) == {"editor"} and by["editor"]["operation"] == "Update"
    assert by["editor"]["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}
    # removing a field removes it from every owner
    newer = cm(a="2")
    newer["metadata"]["managedFields"] = managed
    new["metadata"]["managedFields"] = managed
    managed = mf.track_update(new, newer, manager="x", api_version="v1", now=NOW, schema=CM)
    assert {e["manager"]: e["fieldsV1"] for e in managed} == {"editor": {"f:data": {"f:a": {}}}}


def test_fields_v1_round_trip() -> None:
    fields = {("f:data", "f:a"), ("f:spec", "f:l", 'k:{"name":"x"}'),
              ("f:spec", "f:l", 'k:{"name":"x"}', "f:name"), ("f:s", 'v:"q"')}
    assert mf.from_fields_v1(mf.to_fields_v1(fields)) == fields
    assert mf.from_fields_v1({"junk": 1, "f:x": "notadict"}) == set()
