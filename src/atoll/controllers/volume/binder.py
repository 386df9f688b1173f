"""Which PersistentVolume a claim may bind to: upstream's ``findMatchingVolume``, pure.

A volume fits a claim when it is not being deleted, has the claim's ``volumeMode``, the same
class (a claim with ``""`` or no class takes only volumes without one), at least the claim's
access modes, at least its requested capacity, labels its ``selector`` accepts, and, when the
claim waits on a node (``volume.kubernetes.io/selected-node``, or a node the scheduler tries),
node affinity that admits that node.  Among those the smallest wins.  A volume pre-bound to
the claim (``spec.claimRef`` naming it, with its uid or none) is taken before any other, if
it fits at all; a volume pre-bound to another claim is never taken.

The rest of the module names the annotations, phases and finalizers the binding protocol
uses, so the controller, the provisioner and the scheduler spell them once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from atoll.api import errors, quantity
from atoll.api.labelselector import (DOES_NOT_EXIST, EXISTS, GREATER_THAN, IN, LESS_THAN, NOT_IN,
                                     label_selector_from_dict, new_requirement)

Obj = dict[str, Any]

BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
BETA_CLASS = "volume.beta.kubernetes.io/storage-class"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"
HOSTNAME_LABEL = "kubernetes.io/hostname"

_NODE_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST,
                   "Gt": GREATER_THAN, "Lt": LESS_THAN}


def _d(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def meta(obj: Obj) -> Obj:
    return _d(obj.get("metadata"))


def spec(obj: Obj) -> Obj:
    return _d(obj.get("spec"))


def annotations(obj: Obj) -> dict[str, str]:
    return _d(meta(obj).get("annotations"))


def claim_key(claim: Obj) -> str:
    return f"{meta(claim).get('namespace', '')}/{meta(claim).get('name', '')}"


def claim_class(claim: Obj) -> str:
    """``spec.storageClassName``, or the beta annotation older clients set."""
    beta = annotations(claim).get(BETA_CLASS)
    if isinstance(beta, str):
        return beta
    name = spec(claim).get("storageClassName")
    return name if isinstance(name, str) else ""


def volume_class(volume: Obj) -> str:
    beta = annotations(volume).get(BETA_CLASS)
    if isinstance(beta, str):
        return beta
    name = spec(volume).get("storageClassName")
    return name if isinstance(name, str) else ""


def _bytes(value: Any) -> Decimal | None:
    try:
        return quantity.parse(value)
    except (ValueError, TypeError):
        return None


def requested_bytes(claim: Obj) -> Decimal | None:
    return _bytes(_d(_d(spec(claim).get("resources")).get("requests")).get("storage"))


def capacity_bytes(volume: Obj) -> Decimal | None:
    return _bytes(_d(spec(volume).get("capacity")).get("storage"))


def volume_mode(obj: Obj) -> str:
    mode = spec(obj).get("volumeMode")
    return mode if isinstance(mode, str) and mode else "Filesystem"


def access_modes_fit(volume: Obj, claim: Obj) -> bool:
    """Every mode the claim asks for is one the volume offers."""
    have = spec(volume).get("accessModes")
    want = spec(claim).get("accessModes")
    have_set = set(have) if isinstance(have, list) else set()
    return isinstance(want, list) and all(m in have_set for m in want)


def is_bound_to(volume: Obj, claim: Obj) -> bool:
    """``spec.claimRef`` names this claim (and its uid, when the ref has one)."""
    ref = spec(volume).get("claimRef")
    if not isinstance(ref, dict):
        return False
    m = meta(claim)
    if ref.get("name") != m.get("name") or (ref.get("namespace") or "") != m.get("namespace"):
        return False
    uid = ref.get("uid")
    return not uid or uid == m.get("uid")


def _node_term_matches(term: Any, node_name: str, labels: dict[str, str]) -> bool:
    if not isinstance(term, dict):
        return False
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not isinstance(exprs, list) or not isinstance(fields, list) or not (exprs or fields):
        return False  # an empty term matches no node
    for e in exprs:
        op = _NODE_OPERATORS.get(e.get("operator")) if isinstance(e, dict) else None
        if op is None or not isinstance(e.get("key"), str):
            return False
        try:
            if not new_requirement(e["key"], op, e.get("values") or []).matches(labels):
                return False
        except (errors.ApiError, TypeError, ValueError):
            return False
    for f in fields:
        if not isinstance(f, dict) or f.get("key") != "metadata.name":
            return False
        values = f.get("values") or []
        if f.get("operator") == "In" and node_name not in values:
            return False
        if f.get("operator") == "NotIn" and node_name in values:
            return False
        if f.get("operator") not in ("In", "NotIn"):
            return False
    return True


def node_admits(volume: Obj, node_name: str, labels: dict[str, str] | None) -> bool:
    """The volume's ``nodeAffinity.required`` admits the node (no affinity: every node).

    ``labels`` None means the node is not known: only a volume without affinity admits it."""
    terms = _d(_d(spec(volume).get("nodeAffinity")).get("required")).get("nodeSelectorTerms")
    if spec(volume).get("nodeAffinity") is None:
        return True
    if labels is None or not isinstance(terms, list):
        return False
    labels = dict(labels)
    labels.setdefault(HOSTNAME_LABEL, node_name)
    return any(_node_term_matches(t, node_name, labels) for t in terms)


def affinity_node(volume: Obj) -> str:
    """The single host a provisioned volume is pinned to (``kubernetes.io/hostname In [h]``)."""
    terms = _d(_d(spec(volume).get("nodeAffinity")).get("required")).get("nodeSelectorTerms")
    for t in terms if isinstance(terms, list) else []:
        for e in _d(t).get("matchExpressions") or []:
            if isinstance(e, dict) and e.get("key") == HOSTNAME_LABEL and \
                    e.get("operator") == "In" and len(e.get("values") or []) == 1:
                return str(e["values"][0])
    return ""


def host_affinity(node: str) -> dict[str, Any]:
    """A PV's ``nodeAffinity`` pinning it to one host (what ``affinity_node`` reads back)."""
    return {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}}


def mismatch(volume: Obj, claim: Obj) -> str:
    """Why a volume cannot serve the claim whatever its phase ("" when it can): upstream's
    ``checkVolumeSatisfyClaim`` wording, for a claim that names the volume."""
    want, have = requested_bytes(claim), capacity_bytes(volume)
    if want is None or have is None or have < want:
        return "requested PV is too small"
    if claim_class(claim) != volume_class(volume):
        return "storageClassName does not match"
    if volume_mode(volume) != volume_mode(claim):
        return "incompatible volumeMode"
    if not access_modes_fit(volume, claim):
        return "incompatible accessMode"
    return ""


def find_match(claim: Obj, volumes: Iterable[Obj], *, node: str | None = None,
               node_labels: dict[str, str] | None = None, delay_binding: bool = False
               ) -> Obj | None:
    """The volume ``claim`` should bind to, or None.

    ``node``: the node the claim's consumer goes to (its affinity must admit it).  With
    ``delay_binding`` and no node, only a volume pre-bound to the claim is returned: the
    rest waits for the consumer's node to be known."""
    want = requested_bytes(claim)
    if want is None:
        return None
    selector = spec(claim).get("selector")
    try:
        sel = label_selector_from_dict(selector) if selector is not None else None
    except errors.ApiError:
        return None
    klass, mode = claim_class(claim), volume_mode(claim)
    best: Obj | None = None
    best_size: Decimal | None = None
    for volume in volumes:
        size = capacity_bytes(volume)
        if size is None or size < want or volume_mode(volume) != mode or \
                meta(volume).get("deletionTimestamp"):
            continue
        admits = node is None or node_admits(volume, node, node_labels)
        if is_bound_to(volume, claim):
            return volume if admits else None
        if node is None and delay_binding:
            continue
        if _d(volume.get("status")).get("phase") != "Available" or \
                spec(volume).get("claimRef") is not None:
            continue
        if sel is not None and not sel.matches(_d(meta(volume).get("labels"))):
            continue
        if volume_class(volume) != klass or not admits or not access_modes_fit(volume, claim):
            continue
        if best_size is None or size < best_size:
            best, best_size = volume, size
    return best


def claim_ref(claim: Obj) -> Obj:
    m = meta(claim)
    return {"kind": "PersistentVolumeClaim", "namespace": m.get("namespace", ""),
            "name": m.get("name", ""), "uid": m.get("uid", ""), "apiVersion": "v1",
            "resourceVersion": m.get("resourceVersion", "")}


def is_fully_bound(claim: Obj) -> bool:
    """Both halves written: ``spec.volumeName`` and the bind-completed annotation."""
    return bool(spec(claim).get("volumeName")) and BIND_COMPLETED in annotations(claim)


def pod_claims(pod: Obj) -> list[str]:
    """The names of the claims a pod's volumes use."""
    out = []
    for vol in spec(pod).get("volumes") or []:
        name = _d(_d(vol).get("persistentVolumeClaim")).get("claimName")
        if isinstance(name, str) and name:
            out.append(name)
    return out


def vm_claims(vm: Obj) -> list[str]:
    """The claims a VirtualMachine's ``spec.volumes[].persistentVolumeClaim`` names."""
    return pod_claims(vm)


# -- published capacity (storage.k8s.io/v1 CSIStorageCapacity) --------------------------------
LOCAL_PROVISIONER = "storage.atoll.dev/local"
CAPACITY_NAMESPACE = "kube-system"


def capacity_name(node: str) -> str:
    """The object each host agent publishes for the default class."""
    return f"atoll-local-{node}"


def published_capacity(capacities: Iterable[Obj], node: str, klass: str
                       ) -> tuple[Decimal, str] | None:
    """The largest volume of ``klass`` the node can still take, and how it was written: the
    smaller of ``capacity`` and ``maximumVolumeSize`` of the object published for that class
    and the node's hostname (else the node's ``atoll-local-<node>`` object); None when the
    node publishes nothing, and then nothing is known to be too large."""
    fallback = None
    for c in capacities:
        labels = _d(_d(c.get("nodeTopology")).get("matchLabels"))
        if labels.get(HOSTNAME_LABEL) != node:
            continue
        if c.get("storageClassName") == klass:
            return _limit(c)
        m = meta(c)
        if m.get("name") == capacity_name(node) and m.get("namespace") == CAPACITY_NAMESPACE:
            fallback = c
    return _limit(fallback) if fallback is not None else None


def _limit(c: Obj) -> tuple[Decimal, str] | None:
    best: tuple[Decimal, str] | None = None
    for field in ("capacity", "maximumVolumeSize"):
        value = c.get(field)
        size = _bytes(value) if value is not None else None
        if size is not None and (best is None or size < best[0]):
            best = (size, str(value))
    return best
