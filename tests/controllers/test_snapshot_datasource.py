"""A claim's data source as the provisioner checks it (``controllers/volume/datasource.py``):
where the data is, and upstream's reasons when it cannot be used yet."""

from __future__ import annotations

from typing import Any

import pytest

from atoll.api import snapshots as snap
from atoll.controllers.volume import datasource
from atoll.controllers.volume.snapshotcontroller import snapshot_status

NS = "ns"


class Cache:
    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objs = {(f"{o['metadata']['namespace']}/" if o["metadata"].get("namespace")
                      else "") + o["metadata"]["name"]: o for o in objs}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.objs.get(key)


def claim(name: str, size: str, source: dict[str, Any] | None = None, klass: str = "local",
          mode: str = "Filesystem", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"resources": {"requests": {"storage": size}},
                            "storageClassName": klass, "volumeMode": mode}
    if source:
        spec["dataSourceRef"] = source
    return {"metadata": {"name": name, "namespace": NS, "uid": f"u-{name}"}, "spec": spec,
            **extra}


def snapshot_pair(ready: bool = True, size: int = 32 << 20) -> tuple[dict, dict]:
    vs = {"metadata": {"name": "s", "namespace": NS, "uid": "vs-uid"},
          "spec": {"source": {"persistentVolumeClaimName": "src"}}}
    content = {"metadata": {"name": "snapcontent-vs-uid",
                            "annotations": {snap.NODE_ANNOTATION: "host-a"}},
               "spec": {"driver": "storage.atoll.dev/local", "sourceVolumeMode": "Filesystem",
                        "volumeSnapshotRef": {"name": "s", "namespace": NS, "uid": "vs-uid"}},
               "status": {"readyToUse": ready, "restoreSize": size,
                          "snapshotHandle": "snapcontent-vs-uid", "creationTime": 10 ** 18}}
    vs["status"] = snapshot_status(content)
    return vs, content


SNAP = {"apiGroup": snap.GROUP, "kind": "VolumeSnapshot", "name": "s"}
CLONE = {"kind": "PersistentVolumeClaim", "name": "src"}


def resolve(c: dict[str, Any], *objs: dict[str, Any], volumes: Any = ()) -> Any:
    vss = [o for o in objs if "source" in o.get("spec", {})]
    contents = [o for o in objs if "volumeSnapshotRef" in o.get("spec", {})]
    claims = [o for o in objs if "resources" in o.get("spec", {})]
    return datasource.resolve(c, Cache(*vss), Cache(*contents), Cache(*claims), Cache(*volumes))


def test_a_ready_snapshot_is_restored_on_its_host() -> None:
    vs, content = snapshot_pair()
    assert vs["status"]["restoreSize"] == "32Mi" and vs["status"]["readyToUse"] is True
    src = resolve(claim("r", "64Mi", SNAP), vs, content)
    assert src.node == "host-a"
    assert src.attributes == {snap.SOURCE_SNAPSHOT: "snapcontent-vs-uid"}
    assert resolve(claim("plain", "1Gi")) is None
    assert resolve(claim("pop", "1Gi", {"apiGroup": "x.io", "kind": "Pop", "name": "p"})) \
        is datasource.FOREIGN


@pytest.mark.parametrize("case,words", [
    ("missing", 'volumesnapshots.snapshot.storage.k8s.io "s" not found'),
    ("unready", "snapshot s is not Ready"),
    ("small", "requested volume size 16777216 is less than the size 33554432"),
    ("block", "modifies the mode of the source volume"),
])
def test_an_unusable_snapshot_says_why(case: str, words: str) -> None:
    vs, content = snapshot_pair(ready=case != "unready")
    objs = () if case == "missing" else (vs, content)
    c = claim("r", "16Mi" if case == "small" else "32Mi", SNAP,
              mode="Block" if case == "block" else "Filesystem")
    with pytest.raises(datasource.SourceError, match=words):
        resolve(c, *objs)


def source_claim(klass: str = "local", phase: str = "Bound") -> tuple[dict, dict]:
    src = claim("src", "32Mi", klass=klass, status={"phase": phase})
    src["spec"]["volumeName"] = "pv-src"
    pv = {"metadata": {"name": "pv-src"},
          "spec": {"capacity": {"storage": "32Mi"}, "volumeMode": "Filesystem",
                   "claimRef": {"name": "src", "namespace": NS, "uid": "u-src"},
                   "csi": {"driver": "storage.atoll.dev/local", "volumeHandle": "pv-src"},
                   "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                       {"key": "kubernetes.io/hostname", "operator": "In",
                        "values": ["host-b"]}]}]}}}}
    return src, pv


def test_a_clone_is_made_where_its_source_is_or_says_why() -> None:
    src, pv = source_claim()
    got = resolve(claim("c", "32Mi", CLONE), src, volumes=[pv])
    assert got.node == "host-b" and got.attributes == {snap.SOURCE_VOLUME: "pv-src"}
    with pytest.raises(datasource.SourceError, match="must be in the same storage class"):
        resolve(claim("c", "32Mi", CLONE, klass="other"), src, volumes=[pv])
    with pytest.raises(datasource.SourceError, match="greater than or equal in size"):
        resolve(claim("c", "8Mi", CLONE), src, volumes=[pv])
    with pytest.raises(datasource.SourceError, match="not yet bound to a PV"):
        resolve(claim("c", "32Mi", CLONE), source_claim(phase="Pending")[0], volumes=[pv])
    with pytest.raises(datasource.SourceError, match='persistentvolumeclaims "src" not found'):
        resolve(claim("c", "32Mi", CLONE))
