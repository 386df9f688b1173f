"""VirtualMachineReplicaSets on real QEMU (TCG): `kubectl scale` 1 → 3 → 1, a VM that stops
matching is released and replaced, the set's deletion takes its VMs, and bad manifests are
422s naming the field."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Platform, wait_until
from tests.e2e.test_vms import tiny_image  # noqa: F401  (the session's tiny image)

GROUP = "vmoperator.vmware.com"
RS6 = f"virtualmachinereplicasets.v1alpha6.{GROUP}"
VM6 = f"virtualmachines.v1alpha6.{GROUP}"


def replica_set(ns: str, name: str, image: str, replicas: int, **spec: Any) -> str:
    return json.dumps({
        "apiVersion": f"{GROUP}/v1alpha6", "kind": "VirtualMachineReplicaSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"set": name}},
                 "template": {"metadata": {"labels": {"set": name, "tier": "web"},
                                           "annotations": {"note": "from the set"}},
                              "spec": {"className": "best-effort-xsmall", "imageName": image,
                                       "bootstrap": {"cloudInit": {"cloudConfig": {
                                           "runcmd": ["echo replica-up"]}}}}},
                 **spec}})


def get(platform: Platform, resource: str, ns: str, name: str = "") -> dict[str, Any]:
    out = platform.kubectl("get", resource, *([name] if name else []), "-n", ns, "-o", "json",
                           check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def members(platform: Platform, ns: str, name: str) -> list[dict[str, Any]]:
    return [vm for vm in get(platform, VM6, ns).get("items", [])
            if any(r.get("kind") == "VirtualMachineReplicaSet" and r.get("name") == name and
                   r.get("controller") for r in vm["metadata"].get("ownerReferences") or [])]


def settled(platform: Platform, ns: str, name: str, replicas: int) -> dict[str, Any]:
    """The set once it counts ``replicas`` VMs, all Ready, and owns exactly that many."""
    def check() -> dict[str, Any] | None:
        rs = get(platform, RS6, ns, name)
        st = rs.get("status") or {}
        ok = st.get("observedGeneration") == rs["metadata"]["generation"] and \
            st.get("replicas") == replicas and st.get("readyReplicas", 0) == replicas and \
            len([v for v in members(platform, ns, name)
                 if not v["metadata"].get("deletionTimestamp")]) == replicas
        return rs if ok else None
    return wait_until(f"{name} at {replicas} ready", check, timeout=240, interval=0.5)


def test_scale_up_and_down_release_and_delete(platform: Platform, namespace: str,
                                               tiny_image: str) -> None:  # noqa: F811
    platform.kubectl("apply", "-f", "-", input=replica_set(namespace, "web", tiny_image, 1))
    rs = settled(platform, namespace, "web", 1)
    assert rs["status"]["selector"] == "set=web"
    assert rs["status"]["fullyLabeledReplicas"] == 1
    (first,) = members(platform, namespace, "web")
    assert first["metadata"]["name"].startswith("web-")
    assert first["metadata"]["labels"]["tier"] == "web"
    assert first["metadata"]["annotations"]["note"] == "from the set"
    assert first["spec"]["className"] == "best-effort-xsmall"

    scaled = platform.kubectl("scale", "vmrs", "web", "-n", namespace, "--replicas", "3")
    assert "scaled" in scaled.stdout, scaled.stdout
    settled(platform, namespace, "web", 3)
    table = platform.kubectl("get", "vmrs", "web", "-n", namespace).stdout.split("\n")
    assert table[0].split()[:5] == ["NAME", "DESIRED", "REPLICAS", "READY", "AVAILABLE"]
    assert table[1].split()[:5] == ["web", "3", "3", "3", "3"], table
    scale = json.loads(platform.kubectl("get", "--raw", f"/apis/{GROUP}/v1alpha6/namespaces/"
                                        f"{namespace}/virtualmachinereplicasets/web/scale").stdout)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == "set=web"

    platform.kubectl("scale", "vmrs", "web", "-n", namespace, "--replicas", "1")
    settled(platform, namespace, "web", 1)
    wait_until("the two surplus VMs gone", lambda: len(
        get(platform, VM6, namespace).get("items", [])) == 1, timeout=120, interval=0.5)

    # a VM relabelled out of the set is let go (kept, no longer owned) and replaced
    (kept,) = members(platform, namespace, "web")
    platform.kubectl("label", "vm", kept["metadata"]["name"], "-n", namespace, "set=mine",
                     "--overwrite")
    settled(platform, namespace, "web", 1)
    released = get(platform, VM6, namespace, kept["metadata"]["name"])
    assert not any(r.get("controller") for r in released["metadata"].get("ownerReferences") or [])
    assert members(platform, namespace, "web")[0]["metadata"]["name"] != kept["metadata"]["name"]

    # deleting the set deletes the VMs it owns, not the one it let go
    platform.kubectl("delete", "vmrs", "web", "-n", namespace, "--wait=true", timeout=120)
    wait_until("the set's VMs collected", lambda: [
        v["metadata"]["name"] for v in get(platform, VM6, namespace).get("items", [])] ==
        [kept["metadata"]["name"]], timeout=120, interval=0.5)


def test_bad_replica_sets_are_refused_with_the_field(platform: Platform, namespace: str) -> None:
    def refused(manifest: dict[str, Any]) -> str:
        out = platform.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
        assert out.returncode != 0, out.stdout
        return out.stderr

    good = json.loads(replica_set(namespace, "bad", "tiny", 1))
    other = json.loads(json.dumps(good))
    other["spec"]["selector"] = {"matchLabels": {"set": "something-else"}}
    assert "spec.template.metadata.labels" in refused(other)
    none = json.loads(json.dumps(good))
    del none["spec"]["selector"]
    assert "spec.selector" in refused(none)
    broken = json.loads(json.dumps(good))
    broken["spec"]["selector"] = {"matchExpressions": [{"key": "set", "operator": "Near"}]}
    assert "spec.selector" in refused(broken)
    negative = json.loads(json.dumps(good))
    negative["spec"]["replicas"] = -1
    assert "spec.replicas" in refused(negative)
    assert platform.kubectl("get", "vmrs", "-n", namespace, "-o", "name").stdout == ""

    # the deprecated versions still serve, with upstream's warning
    old = platform.kubectl("get", f"virtualmachinereplicasets.v1alpha3.{GROUP}", "-n", namespace)
    assert "v1alpha3 VirtualMachineReplicaSet is deprecated" in old.stderr
