"""VM affinity and anti-affinity (``spec.affinity``, for VirtualMachineGroup members), as a
rule over hosts that placement, HA restarts, migration and DRS all apply.

A required term (``requiredDuringScheduling…``) is a label selector over the other VMs of
the namespace and a ``topologyKey`` (a host label; ``kubernetes.io/hostname`` is the host
itself): ``vmAffinity`` admits only hosts in a topology domain where a matching VM runs (the
first VM of a set that matches its own term may go anywhere, as upstream's pod affinity),
``vmAntiAffinity`` refuses hosts in a domain where one runs.  Preferred terms do not filter
(not scored yet).  A term that cannot be read matches no VM.  Pure functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from atoll.api import errors
from atoll.api.labelselector import LabelSelector, label_selector_from_dict
from atoll.api.vmoperator import names as n

HOSTNAME = "kubernetes.io/hostname"
REQUIRED = ("requiredDuringSchedulingPreferredDuringExecution",
            "requiredDuringSchedulingIgnoredDuringExecution")
Rule = Callable[[dict[str, Any]], str]


def _terms(vm: dict[str, Any]) -> list[tuple[str, LabelSelector | None, str]]:
    affinity = (vm.get("spec") or {}).get("affinity")
    out = []
    for kind in ("vmAffinity", "vmAntiAffinity"):
        block = affinity.get(kind) if isinstance(affinity, dict) else None
        for field in REQUIRED:
            for term in (block.get(field) if isinstance(block, dict) else None) or []:
                if not isinstance(term, dict):
                    continue
                try:
                    selector = label_selector_from_dict(term["labelSelector"]) \
                        if isinstance(term.get("labelSelector"), dict) else None
                except errors.ApiError:
                    selector = None
                out.append((kind, selector, str(term.get("topologyKey") or HOSTNAME)))
    return out


def domain(node: dict[str, Any] | None, key: str) -> str | None:
    if node is None:
        return None
    labels = node["metadata"].get("labels") or {}
    if key == HOSTNAME:
        return str(labels.get(key) or node["metadata"]["name"])
    value = labels.get(key)
    return str(value) if value is not None else None


def rule(vm: dict[str, Any], peers: Iterable[dict[str, Any]],
         node_of: Callable[[str], dict[str, Any] | None]) -> Rule | None:
    """Why a host cannot take ``vm`` under its required terms ("" when it can), or None
    when it has none.  ``peers`` are the VMs of its namespace (itself is skipped)."""
    terms = _terms(vm)
    if not terms:
        return None
    me = vm["metadata"].get("uid")
    own_labels = vm["metadata"].get("labels") or {}
    placed = [(p["metadata"].get("labels") or {}, host) for p in peers
              if p["metadata"].get("uid") != me and not p["metadata"].get("deletionTimestamp")
              and (host := (p["metadata"].get("labels") or {}).get(n.HOST_LABEL))]

    def check(node: dict[str, Any]) -> str:
        for kind, selector, key in terms:
            here = domain(node, key)
            hosts = [h for labels, h in placed if selector is not None and
                     selector.matches(labels)]
            domains = {d for h in hosts if (d := domain(node_of(h), key)) is not None}
            shown = str(selector) if selector is not None else "no VMs"
            if kind == "vmAffinity":
                if not hosts:
                    if selector is not None and selector.matches(own_labels):
                        continue  # the first of its kind
                    return f"no VM matching its affinity term ({shown}) runs anywhere"
                if here is None or here not in domains:
                    return f"not in the {key} of a VM matching its affinity term ({shown})"
            elif here is not None and here in domains:
                return f"runs a VM its anti-affinity term ({shown}, {key}) keeps away"
        return ""
    return check
