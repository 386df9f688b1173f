"""authentication.k8s.io/v1 TokenReview: "who does this bearer token belong to?"

Extension API servers, webhook token authenticators and in-cluster proxies ask so (with the
``system:auth-delegator`` ClusterRole).  The answer comes from the very authenticators that
guard this server (the static token file, then service account tokens), so a review and a
request with the same token never disagree.  Audiences as upstream: a token must be meant for
one of the audiences asked (or this server's own when none are); ``status.audiences`` names
those it is good for.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import jwt
from aiohttp import web

from atoll.api import errors
from atoll.apiserver.authn import TokenFile, UserInfo, with_authenticated

Authenticator = Callable[[str], Awaitable[UserInfo | None]]


class TokenReviewer:
    def __init__(self, tokens: TokenFile, service_accounts: Authenticator,
                 api_audiences: tuple[str, ...]) -> None:
        self.tokens = tokens
        self.service_accounts = service_accounts
        self.api_audiences = api_audiences

    async def __call__(self, request: web.Request, rt: Any, path: Any,
                       body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        body.setdefault("apiVersion", rt.group_version)
        body.setdefault("kind", rt.kind)
        spec = body.get("spec")
        if not isinstance(spec, dict):
            spec = {}
        token = spec.get("token")
        wanted = spec.get("audiences") or []
        if not isinstance(token, str) or not token:
            raise errors.invalid(rt.kind, "", [errors.required("spec.token")], rt.group)
        if not isinstance(wanted, list) or not all(isinstance(a, str) for a in wanted):
            raise errors.invalid(rt.kind, "", [errors.invalid_value(
                "spec.audiences", wanted, "must be a list of strings")], rt.group)
        body["status"] = await self.review(token, wanted)
        return body

    async def review(self, token: str, wanted: list[str]) -> dict[str, Any]:
        unauthenticated: dict[str, Any] = {"authenticated": False, "user": {}}
        user = self.tokens.lookup(token)
        if user is not None:
            # the token file knows no audiences: it is good for the server's own ones only
            good = [a for a in wanted if a in self.api_audiences] if wanted \
                else list(self.api_audiences)
            if wanted and not good:
                return {**unauthenticated,
                        "error": "token audiences is invalid for the target audiences"}
        else:
            user = await self.service_accounts(token)
            if user is None:
                return {**unauthenticated, "error": "[invalid bearer token, service account "
                                                    "token is not valid]"}
            aud = _audiences(token)
            good = [a for a in (wanted or self.api_audiences) if a in aud]
            if not good:
                return {**unauthenticated, "error": f"[invalid bearer token, token audiences "
                                                    f"{aud} is invalid for the target audiences "
                                                    f"{wanted or list(self.api_audiences)}]"}
        user = with_authenticated(user)
        return {"authenticated": True, "user": user.to_dict(), "audiences": good}


def _audiences(token: str) -> list[str]:
    """The ``aud`` claim of a token the issuer has already verified."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return []
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []
