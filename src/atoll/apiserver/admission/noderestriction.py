"""NodeRestriction: a host agent may change only its own Node, Lease, pods, VMs, the
EndpointSlices of what it serves itself (``<service>-<node>`` in kube-system, managed by
``agent.atoll.dev``, every endpoint on that node) and the CSIStorageCapacity of its own
local datastore (``kube-system/atoll-local-<node>``, topology its own hostname).

Agents sign in as ``system:node:<name>`` in group ``system:nodes`` (RBAC's
``system:node`` role says which kinds they may touch); this plugin narrows that
to their own objects, as upstream's NodeRestriction does, so one compromised
host cannot rewrite another host's state or anyone's workloads.
"""

from __future__ import annotations

from typing import Any

from atoll.api import errors
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader, WriteOptions
from atoll.api.vmoperator.names import GROUP as VM_GROUP, HOST_LABEL
from atoll.apiserver.admission import BasePlugin


NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
LEASE_NAMESPACE = "kube-node-lease"
#: the manager label of the slices host agents publish (their DNS server's address)
AGENT_SLICE_MANAGER = "agent.atoll.dev"
#: a host's CSIStorageCapacity is ``<this>-<node>``, for its own hostname's topology
LOCAL_CAPACITY = "atoll-local"
HOSTNAME = "kubernetes.io/hostname"


def node_name(user: Any) -> str | None:
    if user is None or NODES_GROUP not in user.groups or not user.name.startswith(NODE_PREFIX):
        return None
    return user.name[len(NODE_PREFIX):]


class NodeRestriction(BasePlugin):
    def validate_create(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        node = node_name(opts.user_info)
        if node is not None:
            self._check(rt, obj, node, "create")

    def validate_update(self, svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
                        new: dict[str, Any], opts: WriteOptions, subresource: str) -> None:
        node = node_name(opts.user_info)
        if node is None:
            return
        self._check(rt, old, node, "update")
        if rt.group in ("discovery.k8s.io", "storage.k8s.io"):
            self._check(rt, new, node, "update")
        if rt.group == VM_GROUP and rt.plural == "virtualmachines" and subresource != "status" \
                and _without_finalizers(old) != _without_finalizers(new):
            raise errors.Forbidden(f'{rt.plural} "{old["metadata"].get("name", "")}" is '
                                   f'forbidden: node "{node}" may change only the status and '
                                   "the finalizers of a VirtualMachine",
                                   name=old["metadata"].get("name", ""), group=rt.group,
                                   kind=rt.plural)

    def validate_delete(self, svc: ObjectReader, rt: ResourceType, obj: dict[str, Any],
                        opts: WriteOptions) -> None:
        node = node_name(opts.user_info)
        if node is not None:
            self._check(rt, obj, node, "delete")

    @staticmethod
    def _check(rt: ResourceType, obj: dict[str, Any], node: str, verb: str) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")

        def refuse(why: str) -> None:
            raise errors.Forbidden(f'{rt.plural} "{name}" is forbidden: node "{node}" {why}',
                                   name=name, group=rt.group, kind=rt.plural)

        if rt.group == "" and rt.plural == "nodes":
            if name != node:
                refuse(f"may only {verb} its own Node object")
        elif rt.group == "coordination.k8s.io" and rt.plural == "leases":
            if meta.get("namespace") != LEASE_NAMESPACE or name != node:
                refuse(f"may only {verb} its own Lease in {LEASE_NAMESPACE}")
        elif rt.group == "" and rt.plural == "pods":
            if verb == "create":
                refuse("may not create pods")
            if (obj.get("spec") or {}).get("nodeName") != node:
                refuse(f"may only {verb} pods bound to it")
        elif rt.group == "discovery.k8s.io" and rt.plural == "endpointslices":
            labels = meta.get("labels") or {}
            if meta.get("namespace") != "kube-system" or not name.endswith(f"-{node}") or \
                    labels.get("endpointslice.kubernetes.io/managed-by") != AGENT_SLICE_MANAGER \
                    or any((e or {}).get("nodeName") != node
                           for e in obj.get("endpoints") or [] if isinstance(e, dict)):
                refuse(f"may only {verb} its own EndpointSlices (kube-system/<service>-{node}, "
                       f"managed by {AGENT_SLICE_MANAGER}, endpoints on {node})")
        elif rt.group == "storage.k8s.io" and rt.plural == "csistoragecapacities":
            topology = obj.get("nodeTopology") or {}
            if meta.get("namespace") != "kube-system" or name != f"{LOCAL_CAPACITY}-{node}" or \
                    (verb != "delete" and (topology.get("matchExpressions") or
                                           topology.get("matchLabels") != {HOSTNAME: node})):
                refuse(f"may only {verb} its own storage capacity (kube-system/"
                       f"{LOCAL_CAPACITY}-{node}, nodeTopology {HOSTNAME}={node})")
        elif rt.group == VM_GROUP and rt.plural == "virtualmachines":
            if verb != "update" or (meta.get("labels") or {}).get(HOST_LABEL) != node:
                refuse("may only update VirtualMachines placed on it")


def _without_finalizers(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items()
            if k not in ("finalizers", "managedFields", "resourceVersion")}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}
