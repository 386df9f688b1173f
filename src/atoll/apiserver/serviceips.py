"""The IPAddress objects a Service's write claims or releases, in that write's transaction:
the store, not a cache, decides which of two racing Services gets an address."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from atoll.api.resources import serviceaddresses as sa
from atoll.api.resources.core_v1 import SERVICES
from atoll.api.resources.networking_v1 import IPADDRESSES
from atoll.api.resourcetype import ResourceType
from atoll.api.strategy import ObjectReader
from atoll.api.timestamps import rfc3339
from atoll.storage.store import TxnOp


def claims(svc: ObjectReader, rt: ResourceType, new: dict[str, Any],
           old: dict[str, Any] | None = None) -> list[TxnOp]:
    """Creates of the IPAddresses ``new`` holds that ``old`` did not (and nobody has yet)."""
    if (rt.group, rt.plural) != (SERVICES.group, SERVICES.plural):
        return []
    had = set(sa.held_ips(old)) if old is not None else set()
    ops = []
    for ip in sa.held_ips(new):
        if ip in had:
            continue
        ipa = sa.ip_address_object(ip, new)
        ipa["metadata"]["uid"] = str(uuid.uuid4())
        ipa["metadata"]["creationTimestamp"] = rfc3339()
        ops.append(TxnOp("create", IPADDRESSES.key("", ip), orjson.dumps(ipa)))
    return ops


def releases(svc: ObjectReader, rt: ResourceType, old: dict[str, Any],
             new: dict[str, Any] | None = None) -> list[TxnOp]:
    """Deletes of the IPAddresses ``old`` held for itself that ``new`` (None: gone) drops."""
    if (rt.group, rt.plural) != (SERVICES.group, SERVICES.plural):
        return []
    keep = set(sa.held_ips(new)) if new is not None else set()
    meta = old["metadata"]
    ops = []
    for ip in sa.held_ips(old):
        if ip in keep:
            continue
        cached = svc.read(IPADDRESSES, "", ip)
        if cached is None:
            continue
        parent = (cached.obj.get("spec") or {}).get("parentRef") or {}
        if (parent.get("namespace"), parent.get("name")) == (meta.get("namespace"), meta.get("name")):
            ops.append(TxnOp("delete", cached.key, expected=cached.mod_revision))
    return ops


def is_address_key(key: str) -> bool:
    return key.startswith(IPADDRESSES.prefix(""))
