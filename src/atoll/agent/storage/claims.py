"""A PersistentVolumeClaim as a workload on this host uses it: claim → bound PV → backing.

As kubelet does, a claim is usable only once Bound (``status.phase`` Bound and
``spec.volumeName`` set) to a PV whose ``claimRef`` points back at it; a claim that is not
is an error the pod or VM shows while it waits (it is looked at again on its retry).
The PV's source decides the backing: ``csi`` with driver ``storage.atoll.dev/local`` is a
volume of this host's datastore (and its ``nodeAffinity`` must name this host: its data
lives nowhere else); ``hostPath`` and ``local`` are the path they give.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from atoll.agent.storage import localvolumes as lv
from atoll.api import quantity

HOSTNAME_LABEL = "kubernetes.io/hostname"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
#: (kind, name) → the object or None: "PersistentVolumeClaim" in the workload's namespace,
#: "PersistentVolume" cluster-wide
Fetch = Callable[[str, str], Awaitable[dict[str, Any] | None]]


class ClaimError(Exception):
    """The claim cannot be used (yet); the message says why."""


@dataclass(frozen=True)
class ClaimVolume:
    claim: dict[str, Any]
    pv: dict[str, Any]
    mode: str                              # Filesystem or Block
    local: lv.VolumeSpec | None = None     # storage.atoll.dev/local
    host_path: dict[str, Any] | None = None  # the PV's spec.hostPath
    path: str = ""                         # spec.local.path

    @property
    def size(self) -> int:
        try:
            return quantity.integer(((self.pv.get("spec") or {}).get("capacity") or {})
                                    .get("storage"))
        except (TypeError, ValueError):
            return 0


async def resolve(fetch: Fetch, name: str, node: str, moving_from: str = "") -> ClaimVolume:
    """The claim's volume as this host uses it; ``moving_from``: a live migration brings the
    volume here from that host (its PV still names it until the move is over)."""
    claim = await fetch("PersistentVolumeClaim", name)
    if claim is None:
        raise ClaimError(f'persistentvolumeclaim "{name}" not found')
    if (claim.get("metadata") or {}).get("deletionTimestamp"):
        raise ClaimError(f'persistentvolumeclaim "{name}" is being deleted')
    volume = (claim.get("spec") or {}).get("volumeName")
    phase = (claim.get("status") or {}).get("phase") or "Pending"
    if phase != "Bound" or not volume:
        raise ClaimError(f'persistentvolumeclaim "{name}" is not bound (phase {phase})')
    if not isinstance(volume, str) or not _NAME.match(volume):
        raise ClaimError(f'persistentvolumeclaim "{name}": spec.volumeName {volume!r} is not '
                         "a valid name")
    pv = await fetch("PersistentVolume", volume)
    if pv is None:
        raise ClaimError(f'persistentvolume "{volume}" of claim "{name}" not found')
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    meta = claim["metadata"]
    if ref.get("name") != meta.get("name") or ref.get("namespace") != meta.get("namespace") or \
            (ref.get("uid") and ref.get("uid") != meta.get("uid")):
        raise ClaimError(f'persistentvolume "{volume}" is not bound to claim "{name}" '
                         f"(its claimRef names {ref.get('namespace')}/{ref.get('name')})")
    return from_pv(claim, pv, node, moving_from)


def from_pv(claim: dict[str, Any], pv: dict[str, Any], node: str,
            moving_from: str = "") -> ClaimVolume:
    spec = pv.get("spec") or {}
    name = pv["metadata"].get("name", "")
    mode = spec.get("volumeMode") or lv.FILESYSTEM
    if "csi" in spec:
        driver = (spec.get("csi") or {}).get("driver")
        if driver != lv.DRIVER:
            raise ClaimError(f'persistentvolume "{name}": CSI driver {driver!r} is not '
                             "available on this host")
        if not on_node(pv, node) and not (moving_from and on_node(pv, moving_from)):
            raise ClaimError(f'persistentvolume "{name}" lives on another host (its '
                             f"nodeAffinity does not name {node})")
        try:
            return ClaimVolume(claim, pv, mode, local=lv.spec_from_pv(pv))
        except lv.LocalVolumeError as e:
            raise ClaimError(str(e)) from None
    if isinstance(spec.get("hostPath"), dict):
        return ClaimVolume(claim, pv, mode, host_path=spec["hostPath"])
    if isinstance(spec.get("local"), dict):
        path = spec["local"].get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ClaimError(f'persistentvolume "{name}": local.path must be an absolute path')
        return ClaimVolume(claim, pv, mode, path=path)
    kinds = [k for k in spec if isinstance(spec[k], dict) and k not in (
        "capacity", "claimRef", "nodeAffinity")]
    raise ClaimError(f'persistentvolume "{name}": volume source {", ".join(kinds) or "(none)"}'
                     " is not supported on this host")


def on_node(pv: dict[str, Any], node: str) -> bool:
    """Whether the PV's required nodeAffinity admits ``node`` by its hostname.

    Terms are ORed, expressions ANDed; expressions on other labels are the scheduler's to
    judge (it placed the workload here), so only the hostname ones are checked.  A local
    volume with no affinity at all names no host: it is never taken for this one's."""
    terms = (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}) \
        .get("nodeSelectorTerms") or []
    for term in terms:
        ok, named = True, False
        for expr in (term or {}).get("matchExpressions") or []:
            if (expr or {}).get("key") != HOSTNAME_LABEL:
                continue
            values = expr.get("values") or []
            if expr.get("operator") == "In":
                named = True
                ok = ok and node in values
            elif expr.get("operator") == "NotIn":
                ok = ok and node not in values
        for field in (term or {}).get("matchFields") or []:
            if (field or {}).get("key") == "metadata.name" and field.get("operator") == "In":
                named = True
                ok = ok and node in (field.get("values") or [])
        if ok and named:
            return True
    return False
