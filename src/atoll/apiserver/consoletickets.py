"""Console tickets (VirtualMachineWebConsoleRequest): redeemed here, once, as their user.

A request to a VM's console subresource that carries ``?ticket=`` and no other credential
is authenticated by the ticket: the namespace's WebConsoleRequest whose ``ticketDigest``
is the ticket's SHA-256, naming this VM, not expired and not being deleted.  It is used up
by deleting that request with its uid and resourceVersion as preconditions, so two API
servers (or two tabs) racing for one ticket cannot both win.  The user is then the one the
server recorded when the request was made, and authorization decides as it does for any
console request of that user.  Anything else about a ticket is a plain 401.
"""

from __future__ import annotations

import hmac
import logging
import re
import time

from atoll.api import errors
from atoll.api.strategy import WriteOptions
from atoll.api.timestamps import parse_rfc3339
from atoll.api.vmoperator import webconsole as w
from atoll.api.vmoperator.names import GROUP
from atoll.apiserver.authn import UserInfo, with_authenticated
from atoll.apiserver.objects import ObjectService

log = logging.getLogger(__name__)
CONSOLE = re.compile(rf"^/apis/{re.escape(GROUP)}/v1alpha\d/namespaces/([a-z0-9.-]+)/"
                     r"virtualmachines/([a-z0-9.-]+)/console$")


def console_target(path: str) -> tuple[str, str] | None:
    """(namespace, VM) when ``path`` is a VM's console subresource."""
    m = CONSOLE.match(path)
    return (m.group(1), m.group(2)) if m else None


class TicketRedeemer:
    def __init__(self, svc: ObjectService) -> None:
        self.svc = svc

    async def redeem(self, ticket: str, path: str) -> UserInfo | None:
        target = console_target(path)
        rt = self.svc.resource(GROUP, w.PLURAL)
        if target is None or rt is None or not ticket or len(ticket) > 256:
            return None
        ns, vm = target
        want = w.digest(ticket)
        now = time.time()
        for cached in self.svc.read_list(rt, ns):
            req = cached.obj
            status = req.get("status") or {}
            if not hmac.compare_digest(str(status.get("ticketDigest") or ""), want):
                continue
            expiry = parse_rfc3339(status.get("expiryTime"))
            user = w.requester(req)
            if (req.get("spec") or {}).get("name") != vm or expiry is None or now >= expiry \
                    or req["metadata"].get("deletionTimestamp") or user is None:
                return None
            meta = req["metadata"]
            try:  # used up: exactly one redemption succeeds
                await self.svc.delete(rt, ns, meta["name"], preconditions={
                    "uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
                    opts=WriteOptions(user="system:apiserver"))
            except (errors.NotFound, errors.Conflict):
                return None
            log.info("console ticket of %s/%s redeemed for %s on VM %s", ns, meta["name"],
                     user["name"], vm)
            return with_authenticated(UserInfo(user["name"], user["uid"],
                                               tuple(user["groups"]),
                                               {"authentication.atoll.dev/console-ticket":
                                                [f"{ns}/{meta['name']}"]}))
        return None
