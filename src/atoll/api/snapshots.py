"""``snapshot.storage.k8s.io/v1``: VolumeSnapshotClass, VolumeSnapshot, VolumeSnapshotContent.

Upstream (kubernetes-csi/external-snapshotter) ships these kinds as CRDs; Atoll serves them
the same way, from built-in CRDs (``apiserver/builtin_crds.py``), with upstream's names,
printer columns and structural schemas.  The rules upstream states as CEL or in its
validation webhook (exactly one source, an immutable source, one default class per driver)
are the kinds' strategy (``api/resources/snapshots.py``): this server has no CEL.

The rest names what the common controller, the host's snapshotter and the provisioner
agree on: finalizers, annotations, the dynamic content name, the two time formats.
"""

from __future__ import annotations

import copy
from typing import Any

from atoll.api.resourcetype import ResourceType

GROUP, VERSION = "snapshot.storage.k8s.io", "v1"
API_VERSION = f"{GROUP}/{VERSION}"
VOLUMESNAPSHOTS = ResourceType(GROUP, VERSION, "VolumeSnapshot", "volumesnapshots", True)
VOLUMESNAPSHOTCONTENTS = ResourceType(GROUP, VERSION, "VolumeSnapshotContent",
                                      "volumesnapshotcontents", False)
VOLUMESNAPSHOTCLASSES = ResourceType(GROUP, VERSION, "VolumeSnapshotClass",
                                     "volumesnapshotclasses", False)

#: on a VolumeSnapshot while a claim is being restored from it
AS_SOURCE_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection"
#: on a VolumeSnapshot bound to a content whose policy is Delete
BOUND_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection"
#: on a VolumeSnapshotContent bound to a snapshot: the snapshotter removes it once the data
#: is gone (Delete) or let go (Retain)
CONTENT_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
#: on a claim while a snapshot of it is being cut
PVC_AS_SOURCE_FINALIZER = "snapshot.storage.kubernetes.io/pvc-as-source-protection"
IS_DEFAULT_CLASS = "snapshot.storage.kubernetes.io/is-default-class"
#: the common controller lets the snapshotter delete a content's data
BEING_DELETED = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted"
#: the snapshotter is cutting the snapshot (set before, removed after)
BEING_CREATED = "snapshot.storage.kubernetes.io/volumesnapshot-being-created"
#: Atoll: the host holding a content's data (written by that host's snapshotter)
NODE_ANNOTATION = "storage.atoll.dev/snapshot-node"
#: Atoll: a provisioned volume's data source, in its PV's ``spec.csi.volumeAttributes``
SOURCE_SNAPSHOT = "storage.atoll.dev/source-snapshot"
SOURCE_VOLUME = "storage.atoll.dev/source-volume"
DEFAULT_CLASS = "atoll-local-snapshots"


def content_name(snapshot_uid: str) -> str:
    """The dynamic content of a VolumeSnapshot: one name per snapshot, so a controller
    killed after its create never makes a second one."""
    return f"snapcontent-{snapshot_uid}"


def _bool_default(annotations: Any) -> bool:
    return isinstance(annotations, dict) and annotations.get(IS_DEFAULT_CLASS) == "true"


def is_default_class(klass: dict[str, Any]) -> bool:
    return _bool_default((klass.get("metadata") or {}).get("annotations"))


def default_class_body(driver: str) -> dict[str, Any]:
    """``atoll-local-snapshots``: the class a snapshot of an ``atoll-local`` claim uses when
    it names none."""
    return {"apiVersion": API_VERSION, "kind": "VolumeSnapshotClass",
            "metadata": {"name": DEFAULT_CLASS, "annotations": {IS_DEFAULT_CLASS: "true"}},
            "driver": driver, "deletionPolicy": "Delete"}


# -- the CRDs ---------------------------------------------------------------------------------
def _s(desc: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": desc, **extra}


_ERROR = {"type": "object", "description": "the last error taking or deleting the snapshot, "
                                           "if any", "properties": {
    "message": _s("a string detailing the encountered error (may be logged: no sensitive "
                  "information)"),
    "time": _s("the timestamp when the error was encountered", format="date-time")}}
_POLICY = _s("what happens to the content and its physical snapshot when the bound "
             "VolumeSnapshot is deleted", enum=["Delete", "Retain"])
_META = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
         "metadata": {"type": "object"}}


def _column(name: str, kind: str, path: str, desc: str) -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path, "description": desc}


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _crd(plural: str, kind: str, scope: str, short: list[str], schema: dict[str, Any],
         columns: list[dict[str, Any]], status: bool) -> dict[str, Any]:
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": schema},
                               "additionalPrinterColumns": columns}
    if status:
        version["subresources"] = {"status": {}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{GROUP}",
                         "labels": {"app.kubernetes.io/managed-by": "atoll"}},
            "spec": {"group": GROUP, "scope": scope,
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                               "listKind": f"{kind}List", "shortNames": short},
                     "versions": [version]}}


def _classes() -> dict[str, Any]:
    schema = {"type": "object", "required": ["deletionPolicy", "driver"],
              "description": "VolumeSnapshotClass specifies parameters that an underlying "
                             "storage system uses when creating a volume snapshot.",
              "properties": {**_META, "driver": _s("the name of the storage driver that "
                                                   "handles this VolumeSnapshotClass"),
                             "deletionPolicy": _POLICY,
                             "parameters": {"type": "object",
                                            "additionalProperties": {"type": "string"},
                                            "description": "driver-specific parameters"}}}
    return _crd("volumesnapshotclasses", "VolumeSnapshotClass", "Cluster",
                ["vsclass", "vsclasses"], schema, [
                    {"name": "Driver", "type": "string", "jsonPath": ".driver"},
                    _column("DeletionPolicy", "string", ".deletionPolicy",
                            "Determines whether a VolumeSnapshotContent created through the "
                            "VolumeSnapshotClass should be deleted when its bound "
                            "VolumeSnapshot is deleted."), _AGE], status=False)


def _snapshots() -> dict[str, Any]:
    source = {"type": "object", "description": "where the snapshot is (or will be) taken "
                                               "from: exactly one field, immutable",
              "properties": {
                  "persistentVolumeClaimName": _s("the claim (in the snapshot's namespace) "
                                                  "to snapshot dynamically"),
                  "volumeSnapshotContentName": _s("a pre-existing VolumeSnapshotContent "
                                                  "this snapshot represents")}}
    spec = {"type": "object", "required": ["source"], "properties": {
        "source": source,
        "volumeSnapshotClassName": _s("the VolumeSnapshotClass requested; empty means the "
                                      "default class of the source's driver")}}
    status = {"type": "object", "properties": {
        "boundVolumeSnapshotContentName": _s("the VolumeSnapshotContent this snapshot is "
                                             "bound to"),
        "creationTime": _s("when the point-in-time snapshot was taken", format="date-time"),
        "readyToUse": {"type": "boolean", "description": "whether the snapshot is ready to "
                                                         "restore a volume from"},
        "restoreSize": {"x-kubernetes-int-or-string": True,
                        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|"
                                   r"[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|"
                                   r"(\.[0-9]+))))?$",
                        "description": "the minimum size of a volume restored from it"},
        "volumeGroupSnapshotName": _s("the group snapshot this snapshot belongs to"),
        "error": _ERROR}}
    schema = {"type": "object", "required": ["spec"],
              "description": "VolumeSnapshot is a user's request for either creating a "
                             "point-in-time snapshot of a persistent volume, or binding to a "
                             "pre-existing snapshot.",
              "properties": {**_META, "spec": spec, "status": status}}
    return _crd("volumesnapshots", "VolumeSnapshot", "Namespaced", ["vs"], schema, [
        _column("ReadyToUse", "boolean", ".status.readyToUse",
                "Indicates if the snapshot is ready to be used to restore a volume."),
        _column("SourcePVC", "string", ".spec.source.persistentVolumeClaimName",
                "If a new snapshot needs to be created, this contains the name of the source "
                "PVC from which this snapshot was (or will be) created."),
        _column("SourceSnapshotContent", "string", ".spec.source.volumeSnapshotContentName",
                "If a snapshot already exists, this contains the name of the existing "
                "VolumeSnapshotContent object representing the existing snapshot."),
        _column("RestoreSize", "string", ".status.restoreSize",
                "Represents the minimum size of volume required to rehydrate from this "
                "snapshot."),
        _column("SnapshotClass", "string", ".spec.volumeSnapshotClassName",
                "The name of the VolumeSnapshotClass requested by the VolumeSnapshot."),
        _column("SnapshotContent", "string", ".status.boundVolumeSnapshotContentName",
                "Name of the VolumeSnapshotContent object to which the VolumeSnapshot object "
                "intends to bind to. Please note that verification of binding actually "
                "requires checking both VolumeSnapshot and VolumeSnapshotContent to ensure "
                "both are pointing at each other. Binding MUST be verified prior to usage of "
                "this object."),
        _column("CreationTime", "date", ".status.creationTime",
                "Timestamp when the point-in-time snapshot was taken by the underlying "
                "storage system."), _AGE], status=True)


def _contents() -> dict[str, Any]:
    ref = {"type": "object", "description": "the VolumeSnapshot this content is bound to",
           "properties": {k: {"type": "string"} for k in (
               "apiVersion", "fieldPath", "kind", "name", "namespace", "resourceVersion",
               "uid")}}
    spec = {"type": "object",
            "required": ["deletionPolicy", "driver", "source", "volumeSnapshotRef"],
            "properties": {
                "deletionPolicy": _POLICY,
                "driver": _s("the storage driver that made (or will make) the snapshot"),
                "source": {"type": "object", "description": "exactly one field, immutable",
                           "properties": {
                               "snapshotHandle": _s("a pre-existing snapshot's id on the "
                                                    "storage system"),
                               "volumeHandle": _s("the volume to snapshot dynamically")}},
                "sourceVolumeMode": _s("the mode of the volume snapshotted",
                                       enum=["Block", "Filesystem"]),
                "volumeSnapshotClassName": _s("the VolumeSnapshotClass the snapshot was "
                                              "taken with"),
                "volumeSnapshotRef": ref}}
    status = {"type": "object", "properties": {
        "creationTime": {"type": "integer", "format": "int64",
                         "description": "when the snapshot was taken, in nanoseconds since "
                                        "the epoch"},
        "readyToUse": {"type": "boolean"},
        "restoreSize": {"type": "integer", "format": "int64", "minimum": 0,
                        "description": "the snapshot's size in bytes"},
        "snapshotHandle": _s("the snapshot's id on the storage system"),
        "volumeGroupSnapshotHandle": _s("the group snapshot's id"),
        "error": _ERROR}}
    schema = {"type": "object", "required": ["spec"],
              "description": "VolumeSnapshotContent represents the actual \"on-disk\" snapshot "
                             "object in the underlying storage system",
              "properties": {**_META, "spec": spec, "status": status}}
    return _crd("volumesnapshotcontents", "VolumeSnapshotContent", "Cluster",
                ["vsc", "vscs"], schema, [
                    _column("ReadyToUse", "boolean", ".status.readyToUse",
                            "Indicates if a snapshot is ready to be used to restore a volume."),
                    _column("RestoreSize", "integer", ".status.restoreSize",
                            "Represents the complete size of the snapshot in bytes"),
                    _column("DeletionPolicy", "string", ".spec.deletionPolicy",
                            "Determines whether this VolumeSnapshotContent and its physical "
                            "snapshot on the underlying storage system should be deleted when "
                            "its bound VolumeSnapshot is deleted."),
                    _column("Driver", "string", ".spec.driver",
                            "Name of the CSI driver used to create the physical snapshot on "
                            "the underlying storage system."),
                    _column("VolumeSnapshotClass", "string", ".spec.volumeSnapshotClassName",
                            "Name of the VolumeSnapshotClass to which this snapshot belongs."),
                    _column("VolumeSnapshot", "string", ".spec.volumeSnapshotRef.name",
                            "Name of the VolumeSnapshot object to which this "
                            "VolumeSnapshotContent object is bound."),
                    _column("VolumeSnapshotNamespace", "string",
                            ".spec.volumeSnapshotRef.namespace",
                            "Namespace of the VolumeSnapshot object to which this "
                            "VolumeSnapshotContent object is bound."), _AGE], status=True)


_DEFINITIONS = (_classes(), _snapshots(), _contents())


def definitions() -> list[dict[str, Any]]:
    """The three CRDs, as fresh copies."""
    return copy.deepcopy(list(_DEFINITIONS))
