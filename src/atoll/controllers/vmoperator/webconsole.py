"""VirtualMachineWebConsoleRequests: a one-time console ticket for the user who asked.

For a new request the controller draws a random ticket, writes it encrypted to the
request's public key (RSA-OAEP, SHA-512, as upstream) in ``status.response``, with
``expiryTime`` (120 s on), ``proxyAddr`` (the API server's address, where the console
websocket is) and the ticket's SHA-256 (``ticketDigest``: the only form the platform keeps).
The API server redeems a ticket once (``apiserver/consoletickets.py``); once it expires the
request is deleted, whether it was used or not.
"""

from __future__ import annotations

import base64
import logging
import secrets
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from atoll.api import errors
from atoll.api.timestamps import parse_rfc3339, rfc3339
from atoll.api.vmoperator import webconsole as w
from atoll.api.vmoperator.names import GROUP
from atoll.client.controller import DONE, Builder, Controller, Result, requeue_after
from atoll.client.events import WARNING

log = logging.getLogger(__name__)


def encrypt(public_key_pem: str, ticket: str) -> str:
    key = serialization.load_pem_public_key(public_key_pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    sealed = key.encrypt(ticket.encode(), padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA512()), algorithm=hashes.SHA512(), label=None))
    return base64.b64encode(sealed).decode()


class WebConsoleRequestController(Controller):
    name = "vm-webconsole"
    events_component = "vm-webconsole-controller"

    def declare(self, b: Builder) -> None:
        self.requests = b.primary(GROUP, w.VERSION, w.PLURAL)
        server = urlsplit(self.client.config.server)
        self.proxy_addr = server.netloc

    async def reconcile(self, key: str) -> Result:
        req = self.requests.get(key)
        if req is None or req["metadata"].get("deletionTimestamp"):
            return DONE
        ns, name = key.split("/", 1)
        status = req.get("status") or {}
        now = self.clock()
        expiry = parse_rfc3339(status.get("expiryTime"))
        if expiry is not None:
            if now < expiry:
                return requeue_after(expiry - now + 0.5)
            try:  # expired: used or not, it goes (upstream deletes expired requests)
                await self.client.delete(w.path(ns, name), {
                    "apiVersion": "v1", "kind": "DeleteOptions",
                    "preconditions": {"uid": req["metadata"]["uid"]}})
            except (errors.NotFound, errors.Conflict):
                pass
            return DONE
        ticket = secrets.token_urlsafe(32)
        try:
            response = encrypt(str((req.get("spec") or {}).get("publicKey") or ""), ticket)
        except ValueError as e:  # the server validated the key; an old object: say why
            self.events.record(dict(req, apiVersion=f"{GROUP}/{w.VERSION}", kind=w.KIND),
                               WARNING, "InvalidPublicKey", str(e))
            return DONE
        try:
            await self.client.patch(f"{w.path(ns, name)}/status", {
                "metadata": {"resourceVersion": req["metadata"]["resourceVersion"]},
                "status": {"response": response, "ticketDigest": w.digest(ticket),
                           "expiryTime": rfc3339(now + w.TTL_SECONDS),
                           "proxyAddr": self.proxy_addr}})
        except (errors.NotFound, errors.Conflict):
            return DONE  # gone, or already issued by another copy of this reconcile
        return requeue_after(w.TTL_SECONDS + 0.5)
