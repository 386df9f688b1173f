"""Authentication: who is calling.

x509 client certificates signed by the cluster CA (CN = user, O = groups), and
bearer tokens from a static token file (``token,user,uid,"group1,group2"`` per
line, as kube-apiserver's ``--token-auth-file``).  Health and version
endpoints may be read without credentials, as upstream's
``system:public-info-viewer`` allows.
"""

from __future__ import annotations

import csv
import hmac
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from atoll.api import errors

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/"})


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
               extra_authenticators: list[Callable[[str], Awaitable[UserInfo | None]]] | None = None):
    authenticators = list(extra_authenticators or [])

    @web.middleware
    async def authenticate(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
        user: UserInfo | None = None
        auth = request.headers.get("Authorization", "")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.Unauthorized("Unauthorized")
            token = token.strip()
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
        if user is None:
            if anonymous or request.path in PUBLIC_PATHS:
                user = ANONYMOUS
            else:
                raise errors.Unauthorized("Unauthorized")
        else:
            user = with_authenticated(user)
        request["user"] = user
        request["user_name"] = user.name
        return await handler(request)

    return authenticate
