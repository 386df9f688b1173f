"""``pods/ephemeralcontainers`` rules as pure functions (upstream's
ValidatePodEphemeralContainersUpdate and the subresource's carry-over)."""

from __future__ import annotations

from atoll.api.resources import podephemeral


def pod(*ephemeral: dict) -> dict:
    spec: dict = {"containers": [{"name": "app", "image": "busybox"}],
                  "initContainers": [{"name": "init", "image": "busybox"}]}
    if ephemeral:
        spec["ephemeralContainers"] = list(ephemeral)
    return {"metadata": {"name": "p", "resourceVersion": "5", "labels": {"a": "b"}},
            "spec": spec, "status": {"phase": "Running"}}


def fields(causes: list) -> list[str]:
    return [c.field for c in causes]


DBG = {"name": "dbg", "image": "busybox"}


def test_only_the_ephemeral_containers_are_taken_from_the_update() -> None:
    new = pod(DBG)
    new["metadata"]["labels"] = {"x": "y"}
    new["spec"]["containers"][0]["image"] = "other"
    new["status"] = {}
    merged = podephemeral.merged(pod(), new)
    assert merged["metadata"]["labels"] == {"a": "b"}
    assert merged["spec"]["containers"][0]["image"] == "busybox"
    assert merged["spec"]["ephemeralContainers"] == [DBG]
    assert merged["status"] == {"phase": "Running"}


def test_adding_is_allowed_removing_or_changing_is_not() -> None:
    assert podephemeral.validate_update(pod(), pod(DBG)) == []
    assert podephemeral.validate_update(pod(DBG), pod(DBG, {"name": "two", "image": "b"})) == []
    assert fields(podephemeral.validate_update(pod(DBG), pod())) == ["spec.ephemeralContainers"]
    changed = podephemeral.validate_update(pod(DBG), pod({**DBG, "command": ["sh"]}))
    assert fields(changed) == ["spec.ephemeralContainers[dbg]"]
    assert "may not be changed" in changed[0].message
    # unset and empty are the same thing (Go's semantic equality)
    assert podephemeral.validate_update(pod({**DBG, "env": []}), pod(DBG)) == []


def test_each_container_follows_the_ephemeral_rules() -> None:
    causes = podephemeral.validate_update(pod(), pod(
        {"name": "app", "image": "busybox"},
        {"name": "init", "image": "busybox"},
        {"name": "p", "image": "b", "ports": [{"containerPort": 1}],
         "readinessProbe": {"exec": {"command": ["true"]}},
         "resources": {"limits": {"cpu": "1"}}},
        {"name": "t", "image": "b", "targetContainerName": "nope"},
        {"name": "m", "image": "b", "volumeMounts": [{"name": "v", "mountPath": "/v",
                                                      "subPath": "x"}]},
        {"name": "ok", "image": "b", "targetContainerName": "app", "resources": {}},
        {"name": "ok", "image": "b"}, {"name": "noimage"}))
    assert fields(causes) == [
        "spec.ephemeralContainers[0].name", "spec.ephemeralContainers[1].name",
        "spec.ephemeralContainers[2].readinessProbe", "spec.ephemeralContainers[2].ports",
        "spec.ephemeralContainers[2].resources",
        "spec.ephemeralContainers[3].targetContainerName",
        "spec.ephemeralContainers[4].volumeMounts[0].subPath",
        "spec.ephemeralContainers[6].name", "spec.ephemeralContainers[7].image"]


def test_a_new_pod_has_none() -> None:
    assert fields(podephemeral.forbidden_on_create(pod(DBG)["spec"])) == \
        ["spec.ephemeralContainers"]
    assert podephemeral.forbidden_on_create(pod()["spec"]) == []
