"""Pod update validation (upstream's ValidatePodUpdate): what may change in a pod that exists.

Each row is one update of a stored, defaulted pod run through PodStrategy.prepare_update,
the step every update, patch and apply of a pod passes; the real server path is covered
by tests/security/test_pod_immutability.py.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from atoll.api import errors
from atoll.api.kinds import BUILTIN
from atoll.api.resources.podupdate import FORBIDDEN
from atoll.api.resources.core_v1_pods import PodStrategy, default_pod_spec

PODS = next(r for r in BUILTIN if r.plural == "pods")
NOT_READY = {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300}


def stored(**spec: Any) -> dict[str, Any]:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "n", "annotations": {"a": "b"}},
           "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "9"]}],
                    "nodeName": "node-1", "serviceAccountName": "default", "priority": 0,
                    "tolerations": [dict(NOT_READY)], **spec},
           "status": {"phase": "Running"}}
    default_pod_spec(pod["spec"])
    return pod


def update(old: dict[str, Any], change: Callable[[dict[str, Any]], Any],
           subresource: str = "") -> dict[str, Any]:
    new = copy.deepcopy(old)
    change(new)
    PodStrategy().prepare_update(PODS, old, new, subresource)
    return new


def refused(old: dict[str, Any], change: Callable[[dict[str, Any]], Any],
            subresource: str = "") -> list[errors.Cause]:
    with pytest.raises(errors.ApiError) as info:
        update(old, change, subresource)
    assert info.value.code == 422, info.value
    return info.value.causes


def spec(new: dict[str, Any]) -> dict[str, Any]:
    return new["spec"]


def c0(new: dict[str, Any]) -> dict[str, Any]:
    return new["spec"]["containers"][0]


FORBIDDEN_CHANGES: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("privileged", lambda p: c0(p).__setitem__("securityContext", {"privileged": True})),
    ("capabilities", lambda p: c0(p).__setitem__("securityContext", {
        "capabilities": {"add": ["SYS_ADMIN"]}})),
    ("hostPID", lambda p: spec(p).__setitem__("hostPID", True)),
    ("hostNetwork", lambda p: spec(p).__setitem__("hostNetwork", True)),
    ("hostPath", lambda p: spec(p).setdefault("volumes", []).append(
        {"name": "h", "hostPath": {"path": "/"}})),
    ("command", lambda p: c0(p).__setitem__("command", ["sh", "-c", "id"])),
    ("args", lambda p: c0(p).__setitem__("args", ["x"])),
    ("env", lambda p: c0(p).__setitem__("env", [{"name": "A", "value": "1"}])),
    ("volumeMount", lambda p: c0(p).__setitem__("volumeMounts", [{"name": "v",
                                                                   "mountPath": "/v"}])),
    ("serviceAccountName", lambda p: spec(p).__setitem__("serviceAccountName", "admin")),
    ("nodeName", lambda p: spec(p).__setitem__("nodeName", "node-2")),
    ("ephemeralContainers", lambda p: spec(p).__setitem__("ephemeralContainers", [
        {"name": "e", "image": "busybox", "securityContext": {"privileged": True}}])),
    ("resources", lambda p: c0(p).__setitem__("resources", {"limits": {"cpu": "8"}})),
    ("pod securityContext", lambda p: spec(p)["securityContext"].__setitem__("runAsUser", 0)),
    ("allowPrivilegeEscalation unset", None),  # filled below
    ("restartPolicy", lambda p: spec(p).__setitem__("restartPolicy", "Never")),
]


def test_forbidden_changes_are_422_on_spec() -> None:
    old = stored()
    old["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False}
    for name, change in FORBIDDEN_CHANGES:
        if change is None:
            def change(p: dict[str, Any]) -> None:
                c0(p)["securityContext"].pop("allowPrivilegeEscalation")
        causes = refused(old, change)
        assert [c.field for c in causes] == ["spec"], (name, causes)
        assert causes[0].message.startswith("Forbidden: " + FORBIDDEN), (name, causes)


def test_the_message_is_upstreams() -> None:
    assert FORBIDDEN == (
        "pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
        "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to "
        "be set to 1 if it was previously negative)")
    causes = refused(stored(), lambda p: spec(p).__setitem__("hostPID", True))
    assert "spec.hostPID" in causes[0].message


def test_allowed_changes() -> None:
    old = stored(initContainers=[{"name": "i", "image": "busybox"}], activeDeadlineSeconds=60)
    update(old, lambda p: c0(p).__setitem__("image", "nginx:1.27"))
    update(old, lambda p: spec(p)["initContainers"][0].__setitem__("image", "alpine"))
    update(old, lambda p: spec(p).__setitem__("activeDeadlineSeconds", 30))
    update(old, lambda p: spec(p)["tolerations"].append({"key": "x", "operator": "Exists"}))
    update(old, lambda p: spec(p)["tolerations"][0].__setitem__("tolerationSeconds", 10))
    update(old, lambda p: p["metadata"].__setitem__("labels", {"tier": "web"}))
    update(old, lambda p: p["metadata"]["annotations"].__setitem__("note", "x"))
    update(old, lambda p: p.__setitem__("status", {"phase": "Failed"}))  # status is carried


def test_a_client_resending_an_undefaulted_spec_is_not_refused() -> None:
    old = stored()
    new = update(old, lambda p: [spec(p).pop(k) for k in (
        "restartPolicy", "dnsPolicy", "schedulerName", "terminationGracePeriodSeconds",
        "enableServiceLinks", "securityContext", "priority", "tolerations")])
    assert new["spec"]["tolerations"] == [NOT_READY]
    update(old, lambda p: [c0(p).pop(k) for k in ("terminationMessagePath", "imagePullPolicy",
                                                  "resources")])
    update(old, lambda p: spec(p).__setitem__("volumes", None))  # null is unset
    update(old, lambda p: spec(p).__setitem__("hostAliases", []))  # so is an empty list


def test_a_pod_stored_before_a_default_existed_still_takes_metadata_updates() -> None:
    old = stored(volumes=[{"name": "scratch"}])
    old["spec"]["volumes"][0].pop("emptyDir")  # as written before volumes were defaulted
    update(old, lambda p: p["metadata"].__setitem__("labels", {"x": "y"}))


@pytest.mark.parametrize("old_value,new_value,ok", [
    (None, 30, True), (60, 30, True), (60, 60, True), (60, 61, False), (60, None, False),
    (None, -1, False), (None, 2**31, False),
])
def test_active_deadline_seconds(old_value: Any, new_value: Any, ok: bool) -> None:
    old = stored(**({} if old_value is None else {"activeDeadlineSeconds": old_value}))

    def change(p: dict[str, Any]) -> None:
        if new_value is None:
            spec(p).pop("activeDeadlineSeconds", None)
        else:
            spec(p)["activeDeadlineSeconds"] = new_value
    if ok:
        update(old, change)
    else:
        assert refused(old, change)[0].field == "spec.activeDeadlineSeconds"


def test_tolerations_only_grow() -> None:
    old = stored()
    old["spec"]["tolerations"].append({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"})
    causes = refused(old, lambda p: spec(p)["tolerations"].pop())
    assert causes[0].field == "spec.tolerations"
    causes = refused(old, lambda p: spec(p)["tolerations"][1].__setitem__("effect", "NoExecute"))
    assert "existing toleration can not be modified" in causes[0].message


def test_termination_grace_period() -> None:
    update(stored(terminationGracePeriodSeconds=-1),
           lambda p: spec(p).__setitem__("terminationGracePeriodSeconds", 1))
    refused(stored(terminationGracePeriodSeconds=-1),
            lambda p: spec(p).__setitem__("terminationGracePeriodSeconds", 2))
    refused(stored(), lambda p: spec(p).__setitem__("terminationGracePeriodSeconds", 1))


def test_scheduling_gates_only_shrink_and_gated_selectors_only_grow() -> None:
    gated = stored(schedulingGates=[{"name": "a"}, {"name": "b"}], nodeSelector={"zone": "1"})
    del gated["spec"]["nodeName"]
    update(gated, lambda p: spec(p)["schedulingGates"].pop())
    causes = refused(gated, lambda p: spec(p)["schedulingGates"].append({"name": "c"}))
    assert causes[0].field == "spec.schedulingGates[2].name"
    update(gated, lambda p: spec(p)["nodeSelector"].__setitem__("disk", "ssd"))
    causes = refused(gated, lambda p: spec(p)["nodeSelector"].__setitem__("zone", "2"))
    assert causes[0].field == "spec.nodeSelector[zone]"
    ungated = stored(nodeSelector={"zone": "1"})
    refused(ungated, lambda p: spec(p)["nodeSelector"].__setitem__("disk", "ssd"))


def test_containers_cannot_come_or_go() -> None:
    causes = refused(stored(), lambda p: spec(p)["containers"].append({"name": "d",
                                                                       "image": "busybox"}))
    assert (causes[0].field, causes[0].message) == (
        "spec.containers", "Forbidden: pod updates may not add or remove containers")
    causes = refused(stored(), lambda p: c0(p).__setitem__("image", " busybox"))
    assert causes[0].field == "spec.containers[0].image"


def test_apparmor_annotations_are_immutable() -> None:
    key = "container.apparmor.security.beta.kubernetes.io/c"
    causes = refused(stored(), lambda p: p["metadata"]["annotations"].__setitem__(key,
                                                                                  "unconfined"))
    assert causes[0].field == f"metadata.annotations[{key}]"
    old = stored()
    old["metadata"]["annotations"][key] = "runtime/default"
    refused(old, lambda p: p["metadata"]["annotations"].pop(key))


def test_binding_sets_the_node_once() -> None:
    unbound = stored()
    del unbound["spec"]["nodeName"]
    update(unbound, lambda p: spec(p).__setitem__("nodeName", "node-1"), "binding")
    refused(unbound, lambda p: spec(p).__setitem__("nodeName", "node-1"))  # not a plain update
    refused(unbound, lambda p: (spec(p).__setitem__("nodeName", "node-1"),
                                spec(p).__setitem__("hostPID", True)), "binding")
    refused(stored(), lambda p: spec(p).__setitem__("nodeName", "node-2"), "binding")


def test_status_updates_never_look_at_the_spec() -> None:
    old = stored()
    new = copy.deepcopy(old)
    PodStrategy().prepare_update(PODS, old, new, "status")
