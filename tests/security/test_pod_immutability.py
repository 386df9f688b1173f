"""A pod's spec is what was admitted: an edit-only tenant cannot change it afterwards.

Against the real platform, as a namespace user with only ``edit``: a running
pod must refuse (422, ``spec: Forbidden: pod updates may not change fields
other than ...``) every change that would widen what it runs (privileged,
host namespaces, a hostPath volume, capabilities, a new command, args, env or
mount, another service account or node, ephemeral containers) through each
way of writing it (strategic, merge and JSON patches, and PUT), and the stored
spec must stay as it was; the changes upstream allows (an image, an added
toleration, labels) still go through.  At create, Pod Security refuses
AppArmor ``Unconfined`` (field and annotation) and SELinux ``spc_t``; its
``warn`` label and workload templates give warnings, not refusals.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import Platform, wait_until
from tests.security import tenants

POD = "own"
FORBIDDEN = "pod updates may not change fields other than"


class Tenant:
    """kubectl as a user with only ``edit`` in a namespace of its own."""

    def __init__(self, platform: Platform, tmp: Path) -> None:
        self.ns, self.user, self.kubeconfig = tenants.edit_only_user(platform, tmp, "imm",
                                                                     "eve")

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return tenants.kubectl_as(self.kubeconfig, self.user, self.ns, *args, input=input)

    def pod(self, name: str = POD) -> dict[str, Any]:
        out = self.kubectl("get", "pod", name, "-o", "json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


@pytest.fixture(scope="module")
def tenant(platform: Platform, tmp_path_factory: pytest.TempPathFactory):
    t = Tenant(platform, tmp_path_factory.mktemp("immutability"))
    wait_until("the tenant's default ServiceAccount", lambda: t.kubectl(
        "get", "serviceaccount", "default").returncode == 0, timeout=60)
    out = t.kubectl("run", POD, "--image=busybox", "--restart=Always", "--", "sh", "-c",
                    "sleep 3600")
    assert out.returncode == 0, out.stderr
    wait_until("the tenant's pod running", lambda: _ready(t.pod()), timeout=120)
    yield t
    platform.kubectl("delete", "namespace", t.ns, "--wait=false", check=False)


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def _mount_target(pod: dict[str, Any]) -> str:
    volumes = pod["spec"].get("volumes") or []
    return volumes[0]["name"] if volumes else "missing"


#: name → (strategic patch, JSON patch, change to the whole object for merge patch and PUT)
Change = tuple[dict[str, Any], list[dict[str, Any]], Callable[[dict[str, Any]], None]]


def changes(pod: dict[str, Any]) -> dict[str, Change]:
    c = {"name": POD}
    root = {"name": "h", "hostPath": {"path": "/"}}
    mount = {"name": _mount_target(pod), "mountPath": "/elsewhere"}
    debug = {"name": "dbg", "image": "busybox", "securityContext": {"privileged": True}}
    return {
        "privileged": (
            {"spec": {"containers": [{**c, "securityContext": {"privileged": True}}]}},
            [{"op": "add", "path": "/spec/containers/0/securityContext",
              "value": {"privileged": True}}],
            lambda p: _container(p).__setitem__("securityContext", {"privileged": True})),
        "hostPID": ({"spec": {"hostPID": True}},
                    [{"op": "add", "path": "/spec/hostPID", "value": True}],
                    lambda p: p["spec"].__setitem__("hostPID", True)),
        "hostNetwork": ({"spec": {"hostNetwork": True}},
                        [{"op": "add", "path": "/spec/hostNetwork", "value": True}],
                        lambda p: p["spec"].__setitem__("hostNetwork", True)),
        "hostPath volume": ({"spec": {"volumes": [root]}},
                            [{"op": "add", "path": "/spec/volumes/-", "value": root}],
                            lambda p: p["spec"].setdefault("volumes", []).append(root)),
        "capabilities": (
            {"spec": {"containers": [{**c, "securityContext": {
                "capabilities": {"add": ["SYS_ADMIN"]}}}]}},
            [{"op": "add", "path": "/spec/containers/0/securityContext",
              "value": {"capabilities": {"add": ["SYS_ADMIN"]}}}],
            lambda p: _container(p).__setitem__("securityContext", {
                "capabilities": {"add": ["SYS_ADMIN"]}})),
        "command": ({"spec": {"containers": [{**c, "command": ["sh", "-c", "id"]}]}},
                    [{"op": "add", "path": "/spec/containers/0/command",
                      "value": ["sh", "-c", "id"]}],
                    lambda p: _container(p).__setitem__("command", ["sh", "-c", "id"])),
        "args": ({"spec": {"containers": [{**c, "args": ["-c", "cat /etc/shadow"]}]}},
                 [{"op": "replace", "path": "/spec/containers/0/args",
                   "value": ["-c", "cat /etc/shadow"]}],
                 lambda p: _container(p).__setitem__("args", ["-c", "cat /etc/shadow"])),
        "env": ({"spec": {"containers": [{**c, "env": [{"name": "LD_PRELOAD", "value": "x"}]}]}},
                [{"op": "add", "path": "/spec/containers/0/env",
                  "value": [{"name": "LD_PRELOAD", "value": "x"}]}],
                lambda p: _container(p).__setitem__("env", [{"name": "LD_PRELOAD", "value": "x"}])),
        "volumeMount": ({"spec": {"containers": [{**c, "volumeMounts": [mount]}]}},
                        [{"op": "add", "path": "/spec/containers/0/volumeMounts/-",
                          "value": mount}],
                        lambda p: _container(p).setdefault("volumeMounts", []).append(mount)),
        "serviceAccountName": ({"spec": {"serviceAccountName": "other"}},
                               [{"op": "replace", "path": "/spec/serviceAccountName",
                                 "value": "other"}],
                               lambda p: p["spec"].__setitem__("serviceAccountName", "other")),
        "nodeName": ({"spec": {"nodeName": "elsewhere"}},
                     [{"op": "replace", "path": "/spec/nodeName", "value": "elsewhere"}],
                     lambda p: p["spec"].__setitem__("nodeName", "elsewhere")),
        "ephemeralContainers": ({"spec": {"ephemeralContainers": [debug]}},
                                [{"op": "add", "path": "/spec/ephemeralContainers",
                                  "value": [debug]}],
                                lambda p: p["spec"].__setitem__("ephemeralContainers", [debug])),
    }


def _refused(out: subprocess.CompletedProcess[str], what: str) -> None:
    assert out.returncode != 0, f"{what} was accepted:\n{out.stdout}"
    # kubectl words a 422 Invalid so: The Pod "own" is invalid: spec: Forbidden: ...
    assert f'The Pod "{POD}" is invalid' in out.stderr and FORBIDDEN in out.stderr, \
        f"{what}: {out.stderr}"


def test_spec_changes_are_refused_by_every_write(tenant: Tenant) -> None:
    before = tenant.pod()
    for name, (strategic, json_ops, change) in changes(before).items():
        _refused(tenant.kubectl("patch", "pod", POD, "-p", json.dumps(strategic)),
                 f"{name} (strategic merge patch)")
        _refused(tenant.kubectl("patch", "pod", POD, "--type", "json", "-p",
                                json.dumps(json_ops)), f"{name} (JSON patch)")
        changed = copy.deepcopy(tenant.pod())
        change(changed)
        _refused(tenant.kubectl("patch", "pod", POD, "--type", "merge", "-p",
                                json.dumps({"spec": changed["spec"]})), f"{name} (merge patch)")
        changed["metadata"].pop("resourceVersion", None)  # the agent writes status meanwhile
        _refused(tenant.kubectl("replace", "-f", "-", input=json.dumps(changed)),
                 f"{name} (PUT)")
    applied = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD},
               "spec": {"containers": [{"name": POD, "image": _container(before)["image"],
                                        "securityContext": {"privileged": True}}]}}
    _refused(tenant.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                            input=json.dumps(applied)), "privileged (server-side apply)")
    after = tenant.pod()
    assert after["spec"] == before["spec"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")


def test_the_changes_upstream_allows_still_go_through(tenant: Tenant) -> None:
    out = tenant.kubectl("label", "pod", POD, "tier=web")
    assert out.returncode == 0, out.stderr
    toleration = {"key": "example.com/maintenance", "operator": "Exists", "effect": "NoSchedule"}
    out = tenant.kubectl("patch", "pod", POD, "--type", "json", "-p", json.dumps(
        [{"op": "add", "path": "/spec/tolerations/-", "value": toleration}]))
    assert out.returncode == 0, out.stderr
    out = tenant.kubectl("patch", "pod", POD, "-p", json.dumps(
        {"spec": {"containers": [{"name": POD, "image": "busybox:latest"}]}}))
    assert out.returncode == 0, out.stderr
    pod = tenant.pod()
    assert pod["metadata"]["labels"]["tier"] == "web"
    assert toleration in pod["spec"]["tolerations"]
    assert _container(pod)["image"] == "busybox:latest"
    # a client re-sending what it read (kubectl replace of `get -o json`) is not refused
    pod["metadata"].pop("resourceVersion")
    out = tenant.kubectl("replace", "-f", "-", input=json.dumps(pod))
    assert out.returncode == 0, out.stderr


def _pod(name: str, *, annotations: dict[str, str] | None = None,
         pod_sc: dict[str, Any] | None = None,
         container_sc: dict[str, Any] | None = None) -> str:
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    if container_sc:
        container["securityContext"] = container_sc
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "annotations": annotations or {}},
                       "spec": {"securityContext": pod_sc or {}, "containers": [container]}})


@pytest.mark.parametrize("name,body,expect", [
    ("aa-pod", _pod("aa-pod", pod_sc={"appArmorProfile": {"type": "Unconfined"}}),
     'pod must not set AppArmor profile type to "Unconfined"'),
    ("aa-ctr", _pod("aa-ctr", container_sc={"appArmorProfile": {"type": "Unconfined"}}),
     'container "c" must not set AppArmor profile type to "Unconfined"'),
    ("aa-ann", _pod("aa-ann", annotations={
        "container.apparmor.security.beta.kubernetes.io/c": "unconfined"}),
     "forbidden AppArmor profile"),
    ("se-pod", _pod("se-pod", pod_sc={"seLinuxOptions": {"type": "spc_t"}}),
     'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "spc_t")'),
    ("se-ctr", _pod("se-ctr", container_sc={"seLinuxOptions": {"type": "spc_t"}}),
     'container "c" set forbidden securityContext.seLinuxOptions: type "spc_t"'),
    ("seccomp", _pod("seccomp", pod_sc={"seccompProfile": {"type": "Unconfined"}}),
     'pod must not set securityContext.seccompProfile.type to "Unconfined"'),
])
def test_pod_security_baseline_refuses_at_create(tenant: Tenant, name: str, body: str,
                                                 expect: str) -> None:
    out = tenant.kubectl("create", "-f", "-", input=body)
    assert out.returncode != 0, out.stdout
    assert 'violates PodSecurity "baseline:latest"' in out.stderr and expect in out.stderr, \
        out.stderr
    assert tenant.kubectl("get", "pod", name).returncode != 0


def test_warnings_for_the_warn_label_and_for_templates(platform: Platform,
                                                       tenant: Tenant) -> None:
    platform.kubectl("label", "namespace", tenant.ns, "pod-security.kubernetes.io/warn=restricted")
    try:
        out = tenant.kubectl("create", "--dry-run=server", "-f", "-", input=_pod("plain"))
        assert out.returncode == 0, out.stderr
        assert "would violate PodSecurity" in out.stderr and "restricted:latest" in out.stderr, \
            out.stderr
    finally:
        platform.kubectl("label", "namespace", tenant.ns, "pod-security.kubernetes.io/warn-")
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "priv"},
                  "spec": {"selector": {"matchLabels": {"app": "priv"}},
                           "template": {"metadata": {"labels": {"app": "priv"}},
                                        "spec": {"hostPID": True, "containers": [
                                            {"name": "c", "image": "busybox"}]}}}}
    out = tenant.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(deployment))
    assert out.returncode == 0, out.stderr
    assert "would violate PodSecurity" in out.stderr and "baseline:latest" in out.stderr, \
        out.stderr
    assert "hostPID=true" in out.stderr, out.stderr
