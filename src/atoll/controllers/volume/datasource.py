"""A claim's data source (``spec.dataSourceRef``, else ``spec.dataSource``), as the
external-provisioner checks it before provisioning: a VolumeSnapshot (restore) or another
claim (clone) of the same namespace.

A source that is not usable yet is a ``SourceError`` whose message is upstream's: the
provisioner records it as a ``ProvisioningFailed`` Event and leaves the claim Pending; it
looks again when the snapshot, its content or the source claim changes.  A usable source
says where the data is (the host: local volumes and their snapshots live on one) and what
the new volume's PV carries so that host fills it (``spec.csi.volumeAttributes``).  A
source of another kind (a volume populator's) is not the local provisioner's: ``FOREIGN``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from atoll.api import snapshots as snap
from atoll.controllers.volume import binder
from atoll.controllers.volume.binder import LOCAL_PROVISIONER, Obj, meta, spec
from atoll.controllers.volume.snapshotcontroller import points_back

ALLOW_MODE_CHANGE = "snapshot.storage.kubernetes.io/allow-volume-mode-change"


class SourceError(Exception):
    """The data source cannot be used (yet); the message says why."""


@dataclass(frozen=True)
class Source:
    node: str
    size: Decimal
    attributes: dict[str, str] = field(default_factory=dict)


#: a data source some other controller (a populator) serves
FOREIGN = Source("", Decimal(0))


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def reference(claim: Obj) -> Obj | None:
    """The claim's data source reference (``dataSourceRef`` wins, as upstream)."""
    for key in ("dataSourceRef", "dataSource"):
        ref = spec(claim).get(key)
        if isinstance(ref, dict) and ref.get("name"):
            return ref
    return None


def source_key(claim: Obj) -> list[str]:
    """``<namespace>/<kind>/<name>`` of the claim's source (an informer index)."""
    ref = reference(claim)
    if ref is None:
        return []
    ns = ref.get("namespace") or meta(claim).get("namespace", "")
    return [f"{ns}/{ref.get('kind')}/{ref['name']}"]


def _bytes_text(size: Decimal) -> str:
    return str(int(size))


def resolve(claim: Obj, snapshots: Any, contents: Any, claims: Any, volumes: Any) -> Source | None:
    """Where the claim's data comes from; None without a data source."""
    ref = reference(claim)
    if ref is None:
        return None
    group, kind = ref.get("apiGroup") or "", ref.get("kind")
    if group == snap.GROUP and kind == "VolumeSnapshot":
        return _snapshot(claim, ref["name"], snapshots, contents)
    if group == "" and kind == "PersistentVolumeClaim":
        return _clone(claim, ref["name"], claims, volumes)
    return FOREIGN


def _snapshot(claim: Obj, name: str, snapshots: Any, contents: Any) -> Source:
    ns = meta(claim)["namespace"]
    prefix = f"error getting handle for DataSource Type VolumeSnapshot by Name {name}: "
    vs = snapshots.get(f"{ns}/{name}")
    if vs is None:
        raise SourceError(prefix + f"error getting snapshot {name} from api server: "
                                   f'volumesnapshots.snapshot.storage.k8s.io "{name}" not found')
    if meta(vs).get("deletionTimestamp"):
        raise SourceError(prefix + f"snapshot {name} is currently being deleted")
    status = _d(vs.get("status"))
    if status.get("readyToUse") is not True:
        raise SourceError(prefix + f"snapshot {name} is not Ready")
    content = contents.get(status.get("boundVolumeSnapshotContentName") or "")
    if not points_back(content, vs):
        raise SourceError(prefix + f"snapshot {name} is not bound to a content that names it")
    assert content is not None
    if spec(content).get("driver") != LOCAL_PROVISIONER:
        raise SourceError(prefix + f"snapshot {name} was taken by driver "
                                   f"{spec(content).get('driver')}, not {LOCAL_PROVISIONER}")
    cstatus = _d(content.get("status"))
    handle = cstatus.get("snapshotHandle")
    node = (meta(content).get("annotations") or {}).get(snap.NODE_ANNOTATION)
    if not handle or not node:
        raise SourceError(prefix + f"snapshot {name}: its content names no snapshot handle or "
                                   "host")
    size = Decimal(int(cstatus.get("restoreSize") or 0))
    want = binder.requested_bytes(claim) or Decimal(0)
    if want < size:
        raise SourceError(f"requested volume size {_bytes_text(want)} is less than the size "
                          f"{_bytes_text(size)} for the source snapshot {name}")
    mode = spec(content).get("sourceVolumeMode")
    if mode and mode != binder.volume_mode(claim) and \
            (meta(content).get("annotations") or {}).get(ALLOW_MODE_CHANGE) != "true":
        raise SourceError(f"requested volume {ns}/{meta(claim)['name']} modifies the mode of "
                          "the source volume but does not have permission to do so. "
                          f"{ALLOW_MODE_CHANGE} annotation is not present on snapshotcontent "
                          f"{meta(content)['name']}")
    return Source(str(node), size, {snap.SOURCE_SNAPSHOT: str(handle)})


def _clone(claim: Obj, name: str, claims: Any, volumes: Any) -> Source:
    ns = meta(claim)["namespace"]
    prefix = f"error getting handle for DataSource Type PersistentVolumeClaim by Name {name}: "
    source = claims.get(f"{ns}/{name}")
    if source is None:
        raise SourceError(prefix + f'error getting PVC {name} (namespace "{ns}") from api '
                                   f'server: persistentvolumeclaims "{name}" not found')
    if meta(source).get("deletionTimestamp"):
        raise SourceError(prefix + f'the PVC {name} (namespace "{ns}") is being deleted')
    volume = spec(source).get("volumeName")
    if (source.get("status") or {}).get("phase") != "Bound" or not volume:
        raise SourceError(prefix + f"the PVC {name} is not yet bound to a PV, will not attempt "
                                   "to clone")
    if binder.claim_class(source) != binder.claim_class(claim):
        raise SourceError(prefix + "the source PVC and destination PVCs must be in the same "
                                   "storage class for cloning.  Source is in "
                                   f"{binder.claim_class(source)}, but new PVC is in "
                                   f"{binder.claim_class(claim)}")
    pv = volumes.get(volume)
    if pv is None or not binder.is_bound_to(pv, source):
        raise SourceError(prefix + f"the PV {volume} of PVC {name} is not bound to it")
    csi = _d(spec(pv).get("csi"))
    if csi.get("driver") != LOCAL_PROVISIONER or not csi.get("volumeHandle"):
        raise SourceError(prefix + f"the source PVC {name} is not a volume of "
                                   f"{LOCAL_PROVISIONER}")
    size = binder.capacity_bytes(pv) or Decimal(0)
    want = binder.requested_bytes(claim) or Decimal(0)
    if want < size:
        raise SourceError(prefix + "error, new PVC request must be greater than or equal in "
                                   "size to the specified PVC data source, requested "
                                   f"{_bytes_text(want)} but source is {_bytes_text(size)}")
    if binder.volume_mode(pv) != binder.volume_mode(claim):
        raise SourceError(prefix + "the source PVC and destination PVCs must have the same "
                                   f"volume mode for cloning.  Source is "
                                   f"{binder.volume_mode(pv)}.  Requested "
                                   f"{binder.volume_mode(claim)}")
    node = binder.affinity_node(pv)
    if not node:
        raise SourceError(prefix + f"the PV {volume} is pinned to no single host")
    return Source(node, size, {snap.SOURCE_VOLUME: str(csi["volumeHandle"])})
