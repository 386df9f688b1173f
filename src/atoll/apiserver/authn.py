"""Authentication: who is calling.

x509 client certificates signed by the cluster CA (CN = user, O = groups), and
bearer tokens from a static token file (``token,user,uid,"group1,group2"`` per
line, as kube-apiserver's ``--token-auth-file``).  Health and version
endpoints may be read without credentials, as upstream's
``system:public-info-viewer`` allows, and so may the web console's static files
under ``/ui/`` (they carry no data: every call they make brings its own
credentials).  Browsers cannot set ``Authorization`` on a WebSocket, so an
upgrade request may carry its bearer token as the subprotocol
``base64url.bearer.authorization.k8s.io.<base64url token>``, as kube-apiserver
accepts; that protocol is taken out of the request before anything else sees it.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hmac
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from atoll.api import errors

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/"})
#: the web console's static files (``atoll.webui``): readable before signing in
UI_PREFIX = "/ui"
WEBSOCKET_TOKEN_PROTOCOL = "base64url.bearer.authorization.k8s.io."


def public_path(path: str) -> bool:
    return path in PUBLIC_PATHS or path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def websocket_token(request: web.Request) -> tuple[str, web.Request]:
    """The bearer token a WebSocket upgrade carries as a subprotocol ("" if none), and the
    request without that protocol, so it is neither echoed back nor relayed onwards."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        return "", request
    offered = [p.strip() for line in request.headers.getall("Sec-WebSocket-Protocol", [])
               for p in line.split(",") if p.strip()]
    tokens = [p for p in offered if p.startswith(WEBSOCKET_TOKEN_PROTOCOL)]
    if not tokens:
        return "", request
    if len(tokens) > 1:
        raise errors.Unauthorized("Unauthorized: more than one bearer token subprotocol")
    encoded = tokens[0][len(WEBSOCKET_TOKEN_PROTOCOL):]
    try:
        token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, ValueError):
        raise errors.Unauthorized("Unauthorized: the bearer token subprotocol is not "
                                  "base64url") from None
    if not token.strip():
        raise errors.Unauthorized("Unauthorized")
    headers = request.headers.copy()
    del headers["Sec-WebSocket-Protocol"]
    rest = [p for p in offered if p != tokens[0]]
    if rest:
        headers["Sec-WebSocket-Protocol"] = ", ".join(rest)
    return token.strip(), request.clone(headers=headers)


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            d["uid"] = self.uid
        if self.extra:
            d["extra"] = self.extra
        return d


ANONYMOUS = UserInfo("system:anonymous", groups=("system:unauthenticated",))


class TokenFile:
    def __init__(self, path: Path | None) -> None:
        self.tokens: dict[str, UserInfo] = {}
        if path and path.exists():
            self.load(path.read_text())

    def load(self, text: str) -> None:
        for row in csv.reader(io.StringIO(text)):
            if len(row) < 2 or not row[0].strip() or row[0].startswith("#"):
                continue
            token, user = row[0].strip(), row[1].strip()
            uid = row[2].strip() if len(row) > 2 else ""
            groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
            self.tokens[token] = UserInfo(user, uid, groups)

    def lookup(self, token: str) -> UserInfo | None:
        for known, user in self.tokens.items():
            if hmac.compare_digest(known, token):
                return user
        return None


def user_from_peercert(cert: dict | None) -> UserInfo | None:
    if not cert:
        return None
    cn = ""
    orgs: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return UserInfo(cn, groups=tuple(orgs))


def with_authenticated(user: UserInfo) -> UserInfo:
    if "system:authenticated" in user.groups:
        return user
    return UserInfo(user.name, user.uid, user.groups + ("system:authenticated",), user.extra)


def middleware(tokens: TokenFile, *, anonymous: bool = False,
               extra_authenticators: list[Callable[[str], Awaitable[UserInfo | None]]] | None = None,
               ticket_redeemer: Callable[[str, str], Awaitable[UserInfo | None]] | None = None):
    """``ticket_redeemer`` (ticket, path) authenticates a request that carries ``?ticket=``
    and no other credential (a VM console opened by a VirtualMachineWebConsoleRequest)."""
    authenticators = list(extra_authenticators or [])

    @web.middleware
    async def authenticate(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
        user: UserInfo | None = None
        auth = request.headers.get("Authorization", "")
        token = ""
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.Unauthorized("Unauthorized")
            token = token.strip()
        else:
            token, request = websocket_token(request)
        if token:
            user = tokens.lookup(token)
            if user is None:
                for authenticator in authenticators:
                    user = await authenticator(token)
                    if user is not None:
                        break
            if user is None:
                raise errors.Unauthorized("Unauthorized")
        else:
            transport = request.transport
            cert = transport.get_extra_info("peercert") if transport is not None else None
            user = user_from_peercert(cert)
            ticket = request.query.get("ticket", "")
            if user is None and ticket and ticket_redeemer is not None:
                user = await ticket_redeemer(ticket, request.path)
                if user is None:
                    raise errors.Unauthorized("Unauthorized: the console ticket is unknown, "
                                              "used or expired")
        if user is None:
            if anonymous or public_path(request.path):
                user = ANONYMOUS
            else:
                raise errors.Unauthorized("Unauthorized")
        else:
            user = with_authenticated(user)
        request["user"] = user
        request["user_name"] = user.name
        return await handler(request)

    return authenticate
