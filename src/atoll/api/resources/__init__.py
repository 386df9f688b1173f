"""The built-in kinds, each declared once in its group's module, and lookups by kind.

Every module here declares, per kind, a ``Kind``: its resource type, strategy,
table printer and selectable fields (see ``base``).  The rest of the code looks
kinds up here: ``BUILTIN`` (the served resource types, in discovery order),
``strategy_for``, ``printer_for``, ``fields_for``, ``builtin_type``.
"""

from __future__ import annotations

from typing import Any

from atoll.api.printing import Printer
from atoll.api.resources import (admissionregistration_v1, apiextensions_v1,
                                 apiregistration_v1, apps_v1, autoscaling, batch_v1,
                                 certificates_v1, coordination_v1, core_v1, core_v1_pods,
                                 core_v1_rc, discovery_v1, events, networking_v1, node_v1,
                                 policy_v1, rbac_v1, snapshots, storage_v1, vmoperator,
                                 volumes)
from atoll.api.resources.base import FieldsFn, Kind
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import Strategy

#: served kinds in the order discovery lists them (upstream's)
SERVED: tuple[Kind, ...] = (
    # core/v1
    core_v1.NAMESPACE, core_v1.NODE, core_v1_pods.POD, core_v1.SERVICE, core_v1.ENDPOINT,
    core_v1.CONFIGMAP, core_v1.SECRET, core_v1.SERVICEACCOUNT, events.CORE_EVENT,
    volumes.PERSISTENTVOLUME, volumes.PERSISTENTVOLUMECLAIM, core_v1.RESOURCEQUOTA,
    core_v1.LIMITRANGE, core_v1_rc.REPLICATIONCONTROLLER,
    # apps/v1
    apps_v1.DEPLOYMENT, apps_v1.REPLICASET, apps_v1.DAEMONSET, apps_v1.STATEFULSET,
    apps_v1.CONTROLLERREVISION,
    # autoscaling/v2 (stored) and v1 (converted)
    autoscaling.HPA,
    # batch/v1
    batch_v1.JOB, batch_v1.CRONJOB,
    coordination_v1.LEASE,
    rbac_v1.ROLE, rbac_v1.CLUSTERROLE, rbac_v1.ROLEBINDING, rbac_v1.CLUSTERROLEBINDING,
    certificates_v1.CERTIFICATESIGNINGREQUEST,
    volumes.STORAGECLASS, storage_v1.CSISTORAGECAPACITY,
    admissionregistration_v1.VALIDATINGWEBHOOKCONFIGURATION,
    admissionregistration_v1.MUTATINGWEBHOOKCONFIGURATION,
    apiregistration_v1.APISERVICE,
    events.EVENT,
    apiextensions_v1.CUSTOMRESOURCEDEFINITION,
    policy_v1.PODDISRUPTIONBUDGET,
    networking_v1.NETWORKPOLICY, networking_v1.INGRESS, networking_v1.INGRESSCLASS,
    networking_v1.SERVICECIDR, networking_v1.IPADDRESS,
    node_v1.RUNTIMECLASS,
    discovery_v1.ENDPOINTSLICE,
)

#: kinds that add rules or printing without a built-in resource type of their own
EXTRA: tuple[Kind, ...] = (vmoperator.VIRTUALMACHINE, vmoperator.VIRTUALMACHINEREPLICASET,
                           vmoperator.WEBCONSOLEREQUEST, vmoperator.VIRTUALMACHINEGROUP,
                           vmoperator.VIRTUALMACHINESNAPSHOT,
                           snapshots.VOLUMESNAPSHOT,
                           snapshots.VOLUMESNAPSHOTCONTENT, snapshots.VOLUMESNAPSHOTCLASS)

BUILTIN: tuple[ResourceType, ...] = tuple(rt for k in SERVED if k.rt is not None
                                          for rt in (k.rt, *k.other_versions))

_BY_KEY: dict[str, Kind] = {k.kind_key: k for k in SERVED + EXTRA}
_BY_PLURAL: dict[tuple[str, str], ResourceType] = {(k.rt.group, k.rt.plural): k.rt for k in SERVED
                                                   if k.rt is not None}


def kind(kind_key: str) -> Kind | None:
    """The declaration of ``<group>/<Kind>``, if it is a built-in (or extra) kind."""
    return _BY_KEY.get(kind_key)


def strategy_for(kind_key: str) -> Strategy | None:
    k = _BY_KEY.get(kind_key)
    return k.strategy if k is not None else None


def printer_for(kind_key: str) -> Printer | None:
    k = _BY_KEY.get(kind_key)
    return k.printer if k is not None else None


def convert(kind_key: str, obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    """``obj`` as ``api_version``, for kinds served in several versions (others: only the
    apiVersion changes)."""
    k = _BY_KEY.get(kind_key)
    if k is not None and k.convert is not None:
        return k.convert(obj, api_version)
    out = dict(obj)
    out["apiVersion"] = api_version
    return out


def fields_for(kind_key: str) -> FieldsFn | None:
    k = _BY_KEY.get(kind_key)
    return k.fields if k is not None else None


def printed_kinds() -> list[str]:
    """Every kind key with a printer of its own."""
    return [key for key, k in _BY_KEY.items() if k.printer is not None]


def builtin_type(group: str, plural: str) -> ResourceType:
    """A built-in resource type by group and plural (KeyError when there is none)."""
    return _BY_PLURAL[(group, plural)]


__all__ = [
    "BUILTIN",
    "EXTRA",
    "SERVED",
    "Kind",
    "builtin_type",
    "convert",
    "fields_for",
    "kind",
    "printed_kinds",
    "printer_for",
    "strategy_for",
]
