"""No escape through volumes: an edit-only tenant's pods never reach the host's files.

Each case runs as a namespace user with only ``edit`` against the real
platform: the reproduction of issue 18 (an init container plants ``ln -s /``
in an emptyDir, the main container mounts it by ``subPath``) and its
neighbours (a symlink in the middle of a subPath, a symlink to a host file,
``..`` through ``subPathExpr``, item paths of configMap/projected volumes),
each refused with a ``subPath`` event, and legit nested subPaths (file and
directory) that must keep working.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_NODE, Platform, wait_until
from tests.security import tenants


class Tenant:
    """kubectl as a user with only ``edit`` in one namespace (``atoll namespace create``)."""

    def __init__(self, platform: Platform, tmp: Path) -> None:
        self.ns, self.user, self.kubeconfig = tenants.edit_only_user(platform, tmp, "sec",
                                                                     "mallory")
        self.platform = platform

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return tenants.kubectl_as(self.kubeconfig, self.user, self.ns, *args, input=input)

    def apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def pod(self, name: str) -> dict[str, Any]:
        out = self.kubectl("get", "pod", name, "-o", "json")
        return json.loads(out.stdout) if out.returncode == 0 else {}

    def events(self, name: str) -> list[str]:
        out = self.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                           "-o", "json")
        if out.returncode != 0:
            return []
        return [str(e.get("message") or "") for e in json.loads(out.stdout).get("items") or []]


@pytest.fixture(scope="module")
def tenant(platform: Platform, tmp_path_factory: pytest.TempPathFactory):
    t = Tenant(platform, tmp_path_factory.mktemp("tenant"))
    wait_until("the tenant's default ServiceAccount", lambda: t.kubectl(
        "get", "serviceaccount", "default").returncode == 0, timeout=60)
    yield t
    platform.kubectl("delete", "namespace", t.ns, "--wait=false", check=False)


def sh(name: str, script: str, mounts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script],
            "volumeMounts": mounts, **extra}


def pod(name: str, containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None,
        volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": TEST_NODE, "restartPolicy": "Never",
                            "terminationGracePeriodSeconds": 1, "containers": containers,
                            "volumes": volumes or [{"name": "v", "emptyDir": {}}]}
    if init:
        spec["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def planter(script: str) -> list[dict[str, Any]]:
    """An init container that prepares the shared emptyDir (mounted at /v)."""
    return [sh("plant", script, [{"name": "v", "mountPath": "/v"}])]


def container_status(p: dict[str, Any], name: str = "c") -> dict[str, Any]:
    for s in (p.get("status") or {}).get("containerStatuses") or []:
        if s.get("name") == name:
            return s
    return {}


def refused(tenant: Tenant, name: str) -> tuple[str, list[str]]:
    """Wait for the container to be refused a start; its waiting message and the pod's events."""
    def check() -> tuple[str, list[str]] | None:
        waiting = (container_status(tenant.pod(name)).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") != "CreateContainerConfigError":
            return None
        events = [m for m in tenant.events(name) if "subPath" in m]
        return (str(waiting.get("message") or ""), events) if events else None
    return wait_until(f"pod {name} refused with a subPath event", check, timeout=120,
                      interval=0.5)


def assert_never_started(tenant: Tenant, name: str) -> None:
    status = container_status(tenant.pod(name))
    assert "running" not in (status.get("state") or {}) and not status.get("containerID"), status


@pytest.fixture
def host_marker():
    path = Path(f"/tmp/atoll-escape-{uuid.uuid4().hex[:8]}")
    yield path
    path.unlink(missing_ok=True)


def test_symlink_to_root_as_subpath_is_refused(tenant: Tenant, host_marker: Path) -> None:
    """The reproduction of issue 18, exactly."""
    out = tenant.apply(pod("esc", [sh("c", f"echo x > /host{host_marker}; sleep 600",
                                      [{"name": "v", "mountPath": "/host",
                                        "subPath": "escape"}])],
                           init=planter("ln -s / /v/escape")))
    assert out.returncode == 0, out.stderr
    message, events = refused(tenant, "esc")
    assert 'failed to prepare subPath for volumeMount "v" of container "c"' in message
    assert "leaves its volume" in message
    assert any(m.startswith("Error: failed to prepare subPath") for m in events), events
    assert not host_marker.exists()
    assert_never_started(tenant, "esc")
    init = ((tenant.pod("esc").get("status") or {}).get("initContainerStatuses") or [{}])[0]
    assert (init.get("state") or {}).get("terminated", {}).get("exitCode") == 0


def test_symlink_in_the_middle_of_a_subpath_is_refused(tenant: Tenant,
                                                       host_marker: Path) -> None:
    out = tenant.apply(pod("mid", [sh("c", f"echo x > /host/{host_marker.name}; sleep 600",
                                      [{"name": "v", "mountPath": "/host",
                                        "subPath": "a/link/tmp"}])],
                           init=planter("mkdir -p /v/a && ln -s / /v/a/link")))
    assert out.returncode == 0, out.stderr
    message, _ = refused(tenant, "mid")
    assert "symlink" in message
    assert not host_marker.exists()
    assert_never_started(tenant, "mid")


def test_symlink_to_a_host_file_as_a_file_subpath_is_refused(tenant: Tenant,
                                                             host_marker: Path) -> None:
    host_marker.write_text("host data\n")
    out = tenant.apply(pod("file", [sh("c", "echo pwned > /mnt/f; cat /mnt/f; sleep 600",
                                       [{"name": "v", "mountPath": "/mnt/f", "subPath": "f"}])],
                           init=planter(f"ln -s {host_marker} /v/f")))
    assert out.returncode == 0, out.stderr
    refused(tenant, "file")
    assert host_marker.read_text() == "host data\n"
    assert_never_started(tenant, "file")


def test_dotdot_through_subpathexpr_is_refused(tenant: Tenant) -> None:
    env = [{"name": "UP", "value": "../../../../../../.."}]
    out = tenant.apply(pod("expr", [sh("c", "ls /up; sleep 600",
                                       [{"name": "v", "mountPath": "/up",
                                         "subPathExpr": "$(UP)/etc"}], env=env)]))
    assert out.returncode == 0, out.stderr
    message, _ = refused(tenant, "expr")
    assert "'..'" in message
    assert_never_started(tenant, "expr")


def test_legit_nested_subpaths_still_work(tenant: Tenant, platform: Platform) -> None:
    script = ("grep -q hello /f && test -f /d/file && echo w > /d/written && test -d /made "
              "&& echo ok > /mine/by-name && echo checks-passed || echo checks-failed; sleep 600")
    env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    mounts = [{"name": "v", "mountPath": "/d", "subPath": "conf/sub"},
              {"name": "v", "mountPath": "/f", "subPath": "conf/sub/file", "readOnly": True},
              {"name": "v", "mountPath": "/made", "subPath": "new/dir"},
              {"name": "v", "mountPath": "/mine", "subPathExpr": "per-pod/$(POD)"}]
    out = tenant.apply(pod("nested", [sh("c", script, mounts, env=env)],
                           init=planter("mkdir -p /v/conf/sub && echo hello > /v/conf/sub/file")))
    assert out.returncode == 0, out.stderr
    logs = wait_until("the nested subPath checks to run", lambda: (
        out.stdout if "checks-" in (out := tenant.kubectl("logs", "nested", "-c", "c")).stdout
        else None), timeout=120, interval=0.5)
    assert "checks-passed" in logs, json.dumps(tenant.pod("nested").get("status"))[:2000]
    done = tenant.pod("nested")
    volume = platform.data_dir / "agent" / "pods" / done["metadata"]["uid"] / "volumes" / "v"
    assert (volume / "conf" / "sub" / "written").read_text() == "w\n"
    assert (volume / "new" / "dir").is_dir()
    assert (volume / "per-pod" / "nested" / "by-name").read_text() == "ok\n"


@pytest.mark.parametrize("volume, field", [
    ({"configMap": {"name": "cm", "items": [{"key": "k", "path": "../../../etc/x"}]}},
     "spec.volumes[0].configMap.items[0].path"),
    ({"secret": {"secretName": "s", "items": [{"key": "k", "path": "/etc/x"}]}},
     "spec.volumes[0].secret.items[0].path"),
    ({"downwardAPI": {"items": [{"path": "..data", "fieldRef": {"fieldPath": "metadata.name"}}]}},
     "spec.volumes[0].downwardAPI.items[0].path"),
    ({"projected": {"sources": [{"serviceAccountToken": {"path": "a/../../token"}}]}},
     "spec.volumes[0].projected.sources[0].serviceAccountToken.path"),
], ids=["configmap-dotdot", "secret-absolute", "downward-dotdot-prefix", "token-dotdot"])
def test_volume_item_paths_out_of_the_volume_are_invalid(tenant: Tenant, volume: dict[str, Any],
                                                         field: str) -> None:
    obj = pod(f"items-{uuid.uuid4().hex[:6]}", [sh("c", "true", [{"name": "v",
                                                                 "mountPath": "/v"}])],
              volumes=[{"name": "v", **volume}])
    out = tenant.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(obj))
    assert out.returncode != 0
    assert "is invalid" in out.stderr and field in out.stderr, out.stderr
    assert "must" in out.stderr


def test_subpath_literal_dotdot_and_absolute_are_invalid(tenant: Tenant) -> None:
    for sub in ("../x", "/etc"):
        obj = pod(f"lit-{uuid.uuid4().hex[:6]}", [sh("c", "true", [
            {"name": "v", "mountPath": "/v", "subPath": sub}])])
        out = tenant.kubectl("create", "-f", "-", input=json.dumps(obj))
        assert out.returncode != 0 and "spec.containers[0].volumeMounts[0].subPath" in out.stderr
