"""Volume snapshots (``snapshot.storage.k8s.io/v1``) on the real platform: a claim's data
snapshotted from a running runc pod, restored into a new claim and read by another pod;
clones; the Delete and Retain policies seen on the host; bad manifests refused with the
field; a controller killed mid-snapshot makes one content.  Claims use the default class
(``atoll-local``, WaitForFirstConsumer), so pods leave their node to the scheduler."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import Platform, kill_and_await_restart, wait_until
from tests.e2e.test_pods import get_pod, phase, wait_pod
from tests.e2e.test_storage_volumes import stdout_of

GROUP = "snapshot.storage.k8s.io"


def _get(platform: Platform, *args: str) -> Any:
    out = platform.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def _events(platform: Platform, ns: str, name: str) -> list[dict[str, Any]]:
    items = json.loads(platform.kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]
    return [e for e in items if e["involvedObject"].get("name") == name]


def claim(ns: str, name: str, size: str, source: dict[str, str] | None = None,
          klass: str | None = None) -> str:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": size}}}
    if source is not None:
        spec["dataSource"] = source
    if klass is not None:
        spec["storageClassName"] = klass
    return json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec})


def pod(ns: str, name: str, claim_name: str, script: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": ns},
                       "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                                "containers": [{"name": "c", "image": "busybox",
                                                "command": ["sh", "-c", script],
                                                "volumeMounts": [{"name": "d",
                                                                  "mountPath": "/data"}]}],
                                "volumes": [{"name": "d", "persistentVolumeClaim": {
                                    "claimName": claim_name}}]}})


def snapshot(ns: str, name: str, pvc: str, klass: str | None = None) -> str:
    spec: dict[str, Any] = {"source": {"persistentVolumeClaimName": pvc}}
    if klass:
        spec["volumeSnapshotClassName"] = klass
    return json.dumps({"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshot",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec})


def from_snapshot(name: str) -> dict[str, str]:
    return {"apiGroup": GROUP, "kind": "VolumeSnapshot", "name": name}


def ready(platform: Platform, ns: str, name: str, timeout: float = 90) -> dict[str, Any]:
    return wait_until(f"snapshot {name} ready", lambda: (
        vs if ((vs := _get(platform, "-n", ns, "volumesnapshot", name)) or {}).get(
            "status", {}).get("readyToUse") is True else None), timeout)


def snapshot_dir(platform: Platform, handle: str) -> Path:
    return platform.data_dir / "agent" / "snapshots" / handle


def gone(platform: Platform, *args: str) -> bool:
    return _get(platform, *args) is None


def written_claim(platform: Platform, ns: str, name: str, text: str, size: str = "32Mi") -> None:
    """A Bound claim holding /data/file = ``text`` (its writer pod finished)."""
    platform.kubectl("apply", "-f", "-", input=claim(ns, name, size))
    platform.kubectl("apply", "-f", "-", input=pod(ns, f"w-{name}", name,
                                                   f"echo {text} > /data/file"))
    wait_pod(platform, ns, f"w-{name}", phase("Succeeded"), timeout=90)
    platform.kubectl("-n", ns, "delete", "pod", f"w-{name}", "--wait=false")


def read_claim(platform: Platform, ns: str, pod_name: str, claim_name: str,
               script: str = "cat /data/file") -> str:
    platform.kubectl("apply", "-f", "-", input=pod(ns, pod_name, claim_name, script))
    return stdout_of(platform, wait_pod(platform, ns, pod_name, phase("Succeeded"),
                                        timeout=120))


def test_snapshot_of_a_running_pods_claim_restores_the_old_content(platform: Platform,
                                                                   namespace: str) -> None:
    ns = namespace
    platform.kubectl("apply", "-f", "-", input=claim(ns, "data", "32Mi"))
    platform.kubectl("apply", "-f", "-", input=pod(
        ns, "writer", "data", "echo v1 > /data/file && sync && sleep 3600"))
    wait_pod(platform, ns, "writer", phase("Running"), timeout=90)
    wait_until("v1 written", lambda: platform.kubectl(
        "-n", ns, "exec", "writer", "--", "cat", "/data/file", check=False).stdout == "v1\n")
    # a snapshot of the mounted volume (frozen for the copy), with the default class
    platform.kubectl("apply", "-f", "-", input=snapshot(ns, "snap", "data"))
    vs = ready(platform, ns, "snap")
    uid = vs["metadata"]["uid"]
    content_name = f"snapcontent-{uid}"
    assert vs["spec"]["volumeSnapshotClassName"] == "atoll-local-snapshots"
    assert vs["status"]["boundVolumeSnapshotContentName"] == content_name
    assert vs["status"]["restoreSize"] == "32Mi" and vs["status"]["creationTime"]
    assert "error" not in vs["status"]
    assert set(vs["metadata"]["finalizers"]) == {
        "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection",
        "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"}
    content = _get(platform, "volumesnapshotcontent", content_name)
    assert content["spec"]["volumeSnapshotRef"]["uid"] == uid
    assert content["spec"]["deletionPolicy"] == "Delete"
    assert content["spec"]["driver"] == "storage.atoll.dev/local"
    volume = _get(platform, "-n", ns, "pvc", "data")["spec"]["volumeName"]
    assert content["spec"]["source"] == {"volumeHandle": volume}
    assert content["spec"]["sourceVolumeMode"] == "Filesystem"
    assert content["status"]["readyToUse"] is True
    assert content["status"]["restoreSize"] == 32 << 20
    assert content["status"]["snapshotHandle"] == content_name
    assert isinstance(content["status"]["creationTime"], int)
    assert content["metadata"]["finalizers"] == [
        "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"]
    assert (snapshot_dir(platform, content_name) / "disk.img").is_file()
    wait_until("the source claim let go", lambda: "snapshot.storage.kubernetes.io/pvc-as-"
               "source-protection" not in (_get(platform, "-n", ns, "pvc", "data")["metadata"]
                                           .get("finalizers") or []))
    # upstream's columns
    out = platform.kubectl("-n", ns, "get", "vs", "snap").stdout.splitlines()
    assert out[0].split() == ["NAME", "READYTOUSE", "SOURCEPVC", "SOURCESNAPSHOTCONTENT",
                              "RESTORESIZE", "SNAPSHOTCLASS", "SNAPSHOTCONTENT",
                              "CREATIONTIME", "AGE"], out
    assert out[1].split()[:6] == ["snap", "true", "data", "32Mi", "atoll-local-snapshots",
                                  content_name], out
    out = platform.kubectl("get", "vsc", content_name).stdout.splitlines()
    assert out[0].split() == ["NAME", "READYTOUSE", "RESTORESIZE", "DELETIONPOLICY", "DRIVER",
                              "VOLUMESNAPSHOTCLASS", "VOLUMESNAPSHOT",
                              "VOLUMESNAPSHOTNAMESPACE", "AGE"], out
    assert out[1].split()[:8] == [content_name, "true", str(32 << 20), "Delete",
                                  "storage.atoll.dev/local", "atoll-local-snapshots", "snap",
                                  ns], out
    out = platform.kubectl("get", "vsclass", "atoll-local-snapshots").stdout.splitlines()
    assert out[0].split() == ["NAME", "DRIVER", "DELETIONPOLICY", "AGE"], out

    # the claim changes; a claim restored from the snapshot (and larger) has the old content
    platform.kubectl("-n", ns, "exec", "writer", "--", "sh", "-c", "echo v2 > /data/file")
    platform.kubectl("apply", "-f", "-", input=claim(ns, "restored", "64Mi",
                                                     from_snapshot("snap")))
    restored = _get(platform, "-n", ns, "pvc", "restored")
    assert restored["spec"]["dataSourceRef"] == from_snapshot("snap")  # filled in
    text = read_claim(platform, ns, "reader", "restored",
                      "cat /data/file && df -k /data | tail -1")
    lines = text.splitlines()
    assert lines[0] == "v1", text
    assert int(lines[1].split()[1]) > 40 * 1024  # the filesystem grew to the claim's size
    assert platform.kubectl("-n", ns, "exec", "writer", "--", "cat", "/data/file"
                            ).stdout == "v2\n"
    pv = _get(platform, "pv", _get(platform, "-n", ns, "pvc", "restored")["spec"]["volumeName"])
    assert pv["spec"]["csi"]["volumeAttributes"] == {
        "storage.atoll.dev/source-snapshot": content_name}
    assert pv["spec"]["capacity"] == {"storage": "64Mi"}


def test_a_restore_waits_for_its_snapshot_and_a_clone_copies_a_claim(platform: Platform,
                                                                     namespace: str) -> None:
    ns = namespace
    # a restore from a snapshot that does not exist yet: Pending, with the reason
    platform.kubectl("apply", "-f", "-", input=claim(ns, "later", "32Mi",
                                                     from_snapshot("notyet")))
    platform.kubectl("apply", "-f", "-", input=pod(ns, "late-reader", "later",
                                                   "cat /data/file"))
    event = wait_until("ProvisioningFailed", lambda: next(
        (e for e in _events(platform, ns, "later") if e["reason"] == "ProvisioningFailed"),
        None), 60)
    assert 'volumesnapshots.snapshot.storage.k8s.io "notyet" not found' in event["message"]
    assert _get(platform, "-n", ns, "pvc", "later")["status"]["phase"] == "Pending"
    # a snapshot of a claim that does not exist: an error in its status, nothing else
    platform.kubectl("apply", "-f", "-", input=snapshot(ns, "orphan", "nothere"))
    vs = wait_until("the error in status", lambda: (
        v if ((v := _get(platform, "-n", ns, "vs", "orphan")) or {}).get("status", {})
        .get("error") else None))
    assert 'persistentvolumeclaim "nothere" not found' in vs["status"]["error"]["message"]
    assert vs["status"]["readyToUse"] is False

    written_claim(platform, ns, "origin", "first")
    platform.kubectl("apply", "-f", "-", input=snapshot(ns, "notyet", "origin"))
    ready(platform, ns, "notyet")
    pod_obj = wait_pod(platform, ns, "late-reader", phase("Succeeded"), timeout=120)
    assert stdout_of(platform, pod_obj) == "first"

    # clones: the same class and at least the size, else Pending with upstream's reason
    platform.kubectl("apply", "-f", "-", input=claim(
        ns, "small-clone", "16Mi", {"kind": "PersistentVolumeClaim", "name": "origin"}))
    platform.kubectl("apply", "-f", "-", input=pod(ns, "small-reader", "small-clone", "true"))
    event = wait_until("ProvisioningFailed", lambda: next(
        (e for e in _events(platform, ns, "small-clone")
         if e["reason"] == "ProvisioningFailed"), None), 60)
    assert "new PVC request must be greater than or equal in size" in event["message"]
    platform.kubectl("apply", "-f", "-", input=claim(
        ns, "clone", "32Mi", {"kind": "PersistentVolumeClaim", "name": "origin"}))
    assert read_claim(platform, ns, "clone-reader", "clone",
                      "cat /data/file; echo changed > /data/file") == "first"
    assert read_claim(platform, ns, "origin-reader", "origin") == "first"
    assert _get(platform, "-n", ns, "pod", "small-reader")["status"]["phase"] == "Pending"

    # a snapshot a Pending claim restores from is kept until that claim is gone
    platform.kubectl("apply", "-f", "-", input=claim(ns, "waiting", "32Mi",
                                                     from_snapshot("notyet")))
    platform.kubectl("-n", ns, "delete", "vs", "notyet", "--wait=false")
    wait_until("SnapshotDeletePending", lambda: any(
        e["reason"] == "SnapshotDeletePending" for e in _events(platform, ns, "notyet")))
    assert _get(platform, "-n", ns, "vs", "notyet")["metadata"]["deletionTimestamp"]
    platform.kubectl("-n", ns, "delete", "pvc", "waiting", "--wait=false")
    wait_until("the snapshot gone", lambda: gone(platform, "-n", ns, "vs", "notyet"), 60)


def test_delete_and_retain_policies_on_the_host(platform: Platform, namespace: str) -> None:
    ns = namespace
    klass = f"retain-{ns}"
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": klass}, "driver": "storage.atoll.dev/local",
        "deletionPolicy": "Retain"}))
    try:
        written_claim(platform, ns, "data", "kept", size="16Mi")
        platform.kubectl("apply", "-f", "-", input=snapshot(ns, "doomed", "data"))
        platform.kubectl("apply", "-f", "-", input=snapshot(ns, "kept", "data", klass))
        doomed = ready(platform, ns, "doomed")["status"]["boundVolumeSnapshotContentName"]
        kept = ready(platform, ns, "kept")["status"]["boundVolumeSnapshotContentName"]
        assert snapshot_dir(platform, doomed).is_dir() and snapshot_dir(platform, kept).is_dir()
        platform.kubectl("-n", ns, "delete", "vs", "doomed", "kept", "--timeout=60s")
        wait_until("the Delete content gone", lambda: gone(platform, "vsc", doomed), 60)
        wait_until("its data removed", lambda: not snapshot_dir(platform, doomed).exists())
        content = _get(platform, "vsc", kept)
        assert content is not None and content["spec"]["deletionPolicy"] == "Retain"
        assert (snapshot_dir(platform, kept) / "disk.img").is_file()
        # the retained content is deleted by hand: the object goes, the data stays
        platform.kubectl("delete", "vsc", kept, "--timeout=60s")
        assert (snapshot_dir(platform, kept) / "disk.img").is_file()
        # the kept data, named by a pre-provisioned content and its snapshot, restores
        static = f"static-{ns}"
        platform.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": static},
            "spec": {"deletionPolicy": "Retain", "driver": "storage.atoll.dev/local",
                     "source": {"snapshotHandle": kept},
                     "volumeSnapshotRef": {"name": "again", "namespace": ns}}}))
        platform.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "again", "namespace": ns},
            "spec": {"source": {"volumeSnapshotContentName": static}}}))
        vs = ready(platform, ns, "again")
        assert vs["status"]["boundVolumeSnapshotContentName"] == static
        assert vs["status"]["restoreSize"] == "16Mi"
        assert _get(platform, "vsc", static)["spec"]["volumeSnapshotRef"]["uid"] == \
            vs["metadata"]["uid"]
        platform.kubectl("apply", "-f", "-", input=claim(ns, "back", "16Mi",
                                                         from_snapshot("again")))
        assert read_claim(platform, ns, "reader", "back") == "kept"
        platform.kubectl("-n", ns, "delete", "vs", "again", "--timeout=60s")
        platform.kubectl("delete", "vsc", static, "--timeout=60s")
        assert (snapshot_dir(platform, kept) / "disk.img").is_file()
    finally:
        platform.kubectl("delete", "vsclass", klass, "--ignore-not-found")


def test_bad_manifests_are_422_naming_the_field(platform: Platform, namespace: str) -> None:
    ns = namespace

    def refused(body: dict[str, Any], *words: str) -> str:
        out = platform.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
        assert out.returncode != 0, out.stdout
        assert "is invalid" in out.stderr, out.stderr
        for w in words:
            assert w in out.stderr, out.stderr
        return out.stderr

    vs = {"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshot",
          "metadata": {"name": "bad", "namespace": ns}}
    refused({**vs, "spec": {"source": {"persistentVolumeClaimName": "a",
                                       "volumeSnapshotContentName": "b"}}},
            "spec.source", "exactly one of")
    refused({**vs, "spec": {"source": {}}}, "spec.source", "exactly one of")
    refused({**vs, "spec": {}}, "spec.source")
    refused({**vs, "spec": {"source": {"persistentVolumeClaimName": "a"},
                            "volumeSnapshotClassName": ""}}, "spec.volumeSnapshotClassName")
    platform.kubectl("apply", "-f", "-", input=snapshot(ns, "fixed", "a"))
    refused(json.loads(snapshot(ns, "fixed", "b")), "spec.source", "source is immutable")
    vsc = {"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshotContent",
           "metadata": {"name": f"bad-{ns}"}}
    good_spec = {"deletionPolicy": "Delete", "driver": "storage.atoll.dev/local",
                 "source": {"snapshotHandle": "x"},
                 "volumeSnapshotRef": {"name": "s", "namespace": ns}}
    refused({**vsc, "spec": {**good_spec, "source": {"snapshotHandle": "x",
                                                    "volumeHandle": "y"}}},
            "spec.source", "exactly one of")
    refused({**vsc, "spec": {**good_spec, "deletionPolicy": "Sometimes"}},
            "spec.deletionPolicy", "Delete", "Retain")
    refused({**vsc, "spec": {**good_spec, "volumeSnapshotRef": {"name": "s"}}},
            "spec.volumeSnapshotRef.namespace")
    refused({"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshotClass",
             "metadata": {"name": f"bad-{ns}"}, "deletionPolicy": "Delete"}, "driver")
    refused({"apiVersion": f"{GROUP}/v1", "kind": "VolumeSnapshotClass",
             "metadata": {"name": f"second-{ns}", "annotations": {
                 "snapshot.storage.kubernetes.io/is-default-class": "true"}},
             "driver": "storage.atoll.dev/local", "deletionPolicy": "Delete"},
            "default snapshot class atoll-local-snapshots already exists")
    pvc = json.loads(claim(ns, "badsource", "1Mi", {"kind": "Pod", "name": "p"}))
    refused(pvc, "spec.dataSource.kind", "PersistentVolumeClaim")
    pvc = json.loads(claim(ns, "badsource", "1Mi"))
    pvc["spec"]["dataSourceRef"] = {"apiGroup": GROUP, "kind": "VolumeSnapshot",
                                    "name": "s", "namespace": "elsewhere"}
    refused(pvc, "spec.dataSourceRef.namespace")
    pvc = json.loads(claim(ns, "badsource", "1Mi", from_snapshot("a")))
    pvc["spec"]["dataSourceRef"] = from_snapshot("b")
    refused(pvc, "spec.dataSource", "must match dataSourceRef")
    # snapshots count against the namespace's quota (count/volumesnapshots.<group>)
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": ns},
        "spec": {"hard": {f"count/volumesnapshots.{GROUP}": "1"}}}))
    wait_until("the quota counted", lambda: (_get(platform, "-n", ns, "resourcequota", "q")
                                             or {}).get("status", {}).get("used"))
    out = platform.kubectl("apply", "-f", "-", input=snapshot(ns, "over", "a"), check=False)
    assert out.returncode != 0 and "exceeded quota" in out.stderr, out.stderr


def test_a_controller_killed_mid_snapshot_makes_one_content(platform: Platform,
                                                            namespace: str) -> None:
    ns = namespace
    written_claim(platform, ns, "data", "once", size="16Mi")
    platform.kubectl("apply", "-f", "-", input=snapshot(ns, "snap", "data"))
    kill_and_await_restart(f"controller-manager --kubeconfig {platform.data_dir}")
    vs = ready(platform, ns, "snap")
    uid = vs["metadata"]["uid"]
    mine = [c["metadata"]["name"] for c in _get(platform, "vsc")["items"]
            if c["spec"]["volumeSnapshotRef"].get("uid") == uid
            or c["spec"]["volumeSnapshotRef"].get("name") == "snap"
            and c["spec"]["volumeSnapshotRef"].get("namespace") == ns]
    assert mine == [f"snapcontent-{uid}"]
    # and the agent killed: the snapshot data stays whole, a restore still reads it
    kill_and_await_restart(f"agent --kubeconfig {platform.data_dir / 'agent.kubeconfig'}")
    platform.kubectl("apply", "-f", "-", input=claim(ns, "back", "16Mi", from_snapshot("snap")))
    assert read_claim(platform, ns, "reader", "back") == "once"
    assert get_pod(platform, ns, "reader")["status"]["phase"] == "Succeeded"
    leftovers = [p.name for p in (platform.data_dir / "agent" / "snapshots").iterdir()
                 if p.name.startswith(".")]
    assert leftovers == []
    assert uuid.UUID(uid)
