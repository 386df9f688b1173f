"""Names the VirtualMachineWebConsoleRequest's parts agree on (the server's strategy, the
controller that issues tickets, the API server that redeems them).

A ticket is a delegated, one-time credential of the user who made the request: the server
records who that was (``REQUESTED_BY``, set on create and never changed after), the
controller issues a random ticket and keeps only its digest (in status, which only the
platform writes), and the API server accepts it once, on that VM's console, before
``expiryTime``, as that user: authorization then decides as for any console request.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from atoll.api.vmoperator.names import GROUP

VERSION = "v1alpha6"
PLURAL = "virtualmachinewebconsolerequests"
KIND = "VirtualMachineWebConsoleRequest"
#: who made the request (JSON: name, uid, groups), written by the server alone
REQUESTED_BY = "vmoperator.atoll.dev/requested-by"
#: the ticket's life, as upstream's default
TTL_SECONDS = 120
TICKET_QUERY = "ticket"
#: the console path the ticket opens is the VM's console subresource, in this version
CONSOLE_VERSION = "v1alpha3"


def path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def console_path(namespace: str, vm: str) -> str:
    return f"/apis/{GROUP}/{CONSOLE_VERSION}/namespaces/{namespace}/virtualmachines/{vm}/console"


def digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def requester(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded user ({name, uid, groups}), or None when absent or unreadable."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_BY)
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or \
            not value["name"]:
        return None
    groups = value.get("groups")
    return {"name": value["name"], "uid": str(value.get("uid") or ""),
            "groups": [g for g in groups if isinstance(g, str)] if isinstance(groups, list)
            else []}
