"""Address pools for LoadBalancer Services (MetalLB's layer-2 mode, as rules over objects).

A Service takes its address from the LoadBalancerPool its ``network.atoll.dev/pool``
annotation names, else from the first pool by name that assigns automatically; it keeps the
address it has while that stays in the pool, takes ``spec.loadBalancerIP`` when that is free,
else the lowest free one.  One Ready host announces each address (answers ARP for it): the
one ranking highest for the Service by rendezvous hashing, so a host's failure moves only
its own Services, and the others stay where they are.  Pure functions.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any, Iterable

from atoll.api.network import POOL_ANNOTATION

Obj = dict[str, Any]


def pool_for(svc: Obj, pools: Iterable[Obj]) -> Obj | None:
    by_name = {p["metadata"]["name"]: p for p in pools}
    named = ((svc.get("metadata") or {}).get("annotations") or {}).get(POOL_ANNOTATION)
    if named:
        return by_name.get(named)
    for name in sorted(by_name):
        if (by_name[name].get("spec") or {}).get("autoAssign", True):
            return by_name[name]
    return None


def choose_address(svc: Obj, pool: list[ipaddress.IPv4Address],
                   taken: set[str]) -> str | None:
    """The Service's address in ``pool`` given the addresses others hold, or None if full."""
    members = {str(a) for a in pool}
    current = [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {})
               .get("ingress") or [] if isinstance(i, dict)]
    for ip in current:
        if ip in members and ip not in taken:
            return ip
    wanted = (svc.get("spec") or {}).get("loadBalancerIP")
    if wanted in members and wanted not in taken:
        return str(wanted)
    return next((str(a) for a in pool if str(a) not in taken), None)


def announcer(key: str, candidates: Iterable[str]) -> str | None:
    """The host that announces the Service ``key``: highest rendezvous hash of the key and
    the host's name among ``candidates``."""
    best = None
    for node in candidates:
        score = hashlib.sha256(f"{key}/{node}".encode()).digest()
        if best is None or score > best[0]:
            best = (score, node)
    return best[1] if best else None
