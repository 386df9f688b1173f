"""Volume binding, kube-scheduler's VolumeBinding plugin as a pre-filter and a filter.

Once per attempt ``prefilter`` looks at the pod's claims: a missing claim, one being deleted,
one bound to a volume that does not exist, or an unbound claim of an ``Immediate`` class (or
of a class that does not exist) makes the pod unschedulable on every node, with upstream's
words.  What remains is per node (``PodVolumes.check``, run after the resources check as
upstream orders its plugins): a bound claim's volume must admit the node by its node
affinity; an unbound ``WaitForFirstConsumer`` claim needs, on that node, a free volume that
fits it or a provisioner that can make one there (the node's published ``CSIStorageCapacity``
large enough, when it publishes one); a claim that already names a node takes only that
node.  The scheduler then records the chosen node on those claims and binds the pod once they
are bound (``scheduler.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from atoll.controllers.scheduler.cache import NodeInfo
from atoll.controllers.scheduler.podinfo import PodInfo
from atoll.controllers.volume import binder

NODE_CONFLICT = "node(s) had volume node affinity conflict"
BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
NO_STORAGE = "node(s) did not have enough free storage"
UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
MISSING_PV = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Lookups:
    """Reads of the scheduler's informers (claims by ``namespace/name``)."""

    claim: Callable[[str], Obj | None]
    volume: Callable[[str], Obj | None]
    storage_class: Callable[[str], Obj | None]
    volumes: Callable[[], list[Obj]]
    capacities: Callable[[], list[Obj]]


@dataclass
class PodVolumes:
    #: why the pod fits no node at all, or ""
    error: str = ""
    #: the volumes of the pod's bound claims
    bound: list[Obj] = field(default_factory=list)
    #: unbound WaitForFirstConsumer claims with their classes
    unbound: list[tuple[Obj, Obj]] = field(default_factory=list)
    lookups: Lookups | None = None

    def check(self, state: Any, node: NodeInfo) -> tuple[str, ...] | None:
        for volume in self.bound:
            if not binder.node_admits(volume, node.name, node.labels):
                return (NODE_CONFLICT,)
        if not self.unbound or self.lookups is None:
            return None
        taken: set[str] = set()
        candidates = [v for v in self.lookups.volumes()
                      if (v.get("status") or {}).get("phase") == "Available"]
        for claim, sc in self.unbound:
            selected = binder.annotations(claim).get(binder.SELECTED_NODE)
            if selected and selected != node.name:
                return (BIND_CONFLICT,)
            match = binder.find_match(claim, [v for v in candidates
                                              if binder.meta(v).get("name") not in taken],
                                      node=node.name, node_labels=node.labels,
                                      delay_binding=True)
            if match is not None:
                taken.add(binder.meta(match).get("name", ""))
                continue
            provisioner = sc.get("provisioner") or ""
            if not provisioner or provisioner == binder.NO_PROVISIONER:
                return (BIND_CONFLICT,)
            want = binder.requested_bytes(claim)
            limit = binder.published_capacity(self.lookups.capacities(), node.name,
                                              binder.meta(sc).get("name", ""))
            if want is not None and limit is not None and want > limit[0]:
                return (NO_STORAGE,)
        return None


def prefilter(pod: PodInfo, lookups: Lookups) -> PodVolumes | None:
    """The pod's volume state for this attempt; None when it uses no claims."""
    if not pod.claims:
        return None
    out = PodVolumes(lookups=lookups)
    for name in pod.claims:
        claim = lookups.claim(f"{pod.namespace}/{name}")
        if claim is None:
            out.error = f'persistentvolumeclaim "{name}" not found'
            return out
        if binder.meta(claim).get("deletionTimestamp"):
            out.error = f'persistentvolumeclaim "{name}" is being deleted'
            return out
        if binder.is_fully_bound(claim):
            volume = lookups.volume(binder.spec(claim)["volumeName"])
            if volume is None:
                out.error = MISSING_PV
                return out
            out.bound.append(volume)
            continue
        klass = binder.claim_class(claim)
        sc = lookups.storage_class(klass) if klass else None
        if klass and sc is None:
            out.error = f'storageclass.storage.k8s.io "{klass}" not found'
            return out
        if sc is None or sc.get("volumeBindingMode") != binder.WAIT_FOR_FIRST_CONSUMER:
            out.error = UNBOUND_IMMEDIATE
            return out
        out.unbound.append((claim, sc))
    return out
