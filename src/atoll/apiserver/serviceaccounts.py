"""ServiceAccount tokens: issued by TokenRequest, checked on every request, as upstream.

Tokens are JWTs (ES256) signed with a key kept in ``DATA_DIR/pki/sa.key`` (the
same for every server that joined with ``--ca-from``), audience- and
time-bound, and optionally bound to a Pod or Secret: a token outlives neither
its ServiceAccount nor the object it is bound to (both are checked by uid on
every request, so deleting a pod revokes its tokens at once).  The issuer's
keys are published at ``/openid/v1/jwks`` with an OIDC discovery document, so
outside systems can verify Atoll's tokens too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from atoll.api import errors
from atoll.apiserver import http, pki
from atoll.apiserver.authn import UserInfo
from atoll.storage.cacher import Cacher

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 365 * 24 * 3600
BINDABLE = {"Pod": "pods", "Secret": "secrets"}
GROUP_ALL = "system:serviceaccounts"


def ensure_key(pki_dir: Path) -> ec.EllipticCurvePrivateKey:
    path = pki_dir / "sa.key"
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pki.write_file(path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode())
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


class TokenIssuer:
    def __init__(self, pki_dir: Path, cacher: Cacher, issuer: str = DEFAULT_ISSUER,
                 audiences: tuple[str, ...] = ()) -> None:
        self.key = ensure_key(pki_dir)
        self.public = self.key.public_key()
        self.cacher = cacher
        self.issuer = issuer
        #: what a token must be for to be accepted by this API server
        self.audiences = audiences or (issuer,)
        self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.public))
        der = self.public.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = jwt.utils.base64url_encode(hashlib.sha256(der).digest()).decode()
        self.jwk.update({"kid": self.kid, "use": "sig", "alg": "ES256"})

    # -- issuing -----------------------------------------------------------------------------
    def token_request(self, sa: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """Answer a TokenRequest for ServiceAccount ``sa`` (validated here, 422 with paths)."""
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        causes: list[errors.Cause] = []
        audiences = spec.get("audiences") or list(self.audiences)
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a
                                                      for a in audiences):
            causes.append(errors.invalid_value("spec.audiences", audiences,
                                               "must be a list of non-empty strings"))
        seconds = spec.get("expirationSeconds", DEFAULT_EXPIRATION)
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < MIN_EXPIRATION:
            causes.append(errors.invalid_value("spec.expirationSeconds", seconds,
                                               f"may not specify a duration less than "
                                               f"{MIN_EXPIRATION} seconds"))
        elif seconds > MAX_EXPIRATION:
            causes.append(errors.invalid_value("spec.expirationSeconds", seconds,
                                               "may not specify a duration longer than a year"))
        ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
        bound = self._bound_object(spec.get("boundObjectRef"), ns, name, causes)
        if causes:
            raise errors.invalid("TokenRequest", name, causes, "authentication.k8s.io")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": f"system:serviceaccount:{ns}:{name}",
            "aud": audiences, "iat": now, "nbf": now, "exp": now + seconds,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {
                "name": name, "uid": sa["metadata"]["uid"]}}}
        if bound is not None:
            kind, obj = bound
            claims["kubernetes.io"][kind.lower()] = {"name": obj["metadata"]["name"],
                                                     "uid": obj["metadata"]["uid"]}
            node = (obj.get("spec") or {}).get("nodeName") if kind == "Pod" else None
            if node:
                claims["kubernetes.io"]["node"] = {"name": node}
        token = jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})
        expires = dt.datetime.fromtimestamp(now + seconds, dt.timezone.utc)
        return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"name": name, "namespace": ns,
                             "creationTimestamp": dt.datetime.fromtimestamp(
                                 now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
                "spec": {"audiences": audiences, "expirationSeconds": seconds,
                         "boundObjectRef": spec.get("boundObjectRef")},
                "status": {"token": token,
                           "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}

    def _bound_object(self, ref: Any, ns: str, sa_name: str, causes: list[errors.Cause]
                      ) -> tuple[str, dict[str, Any]] | None:
        if not ref:
            return None
        if not isinstance(ref, dict) or ref.get("kind") not in BINDABLE:
            causes.append(errors.not_supported("spec.boundObjectRef.kind",
                                               (ref or {}).get("kind") if isinstance(ref, dict)
                                               else ref, sorted(BINDABLE)))
            return None
        kind = ref["kind"]
        cached = self.cacher.get(f"/registry/core/{BINDABLE[kind]}/{ns}/{ref.get('name', '')}")
        if cached is None:
            raise errors.NotFound(f'{BINDABLE[kind]} "{ref.get("name", "")}" not found',
                                  name=str(ref.get("name", "")), kind=BINDABLE[kind])
        obj = cached.obj
        if ref.get("uid") and ref["uid"] != obj["metadata"].get("uid"):
            raise errors.Conflict(f'the UID in the bound object reference ({ref["uid"]}) does '
                                  f'not match the UID in record ({obj["metadata"]["uid"]}); the '
                                  "object might have been deleted and then recreated",
                                  name=obj["metadata"]["name"], kind=BINDABLE[kind])
        if kind == "Pod" and (obj.get("spec") or {}).get("serviceAccountName",
                                                          "default") != sa_name:
            causes.append(errors.invalid_value(
                "spec.boundObjectRef.name", obj["metadata"]["name"],
                f"cannot bind a token of ServiceAccount {sa_name!r} to a pod running as "
                f"{(obj.get('spec') or {}).get('serviceAccountName')!r}"))
        return kind, obj

    # -- checking ------------------------------------------------------------------------------
    async def authenticate(self, token: str) -> UserInfo | None:
        """The ServiceAccount behind a valid token; None for anything else (then 401)."""
        if token.count(".") != 2:
            return None
        try:
            claims = jwt.decode(token, self.public, algorithms=["ES256"],
                                audience=list(self.audiences), issuer=self.issuer,
                                options={"require": ["exp", "iat", "sub", "aud"]}, leeway=5)
        except jwt.PyJWTError:
            return None
        info = claims.get("kubernetes.io")
        if not isinstance(info, dict):
            return None
        ns = info.get("namespace")
        sa = info.get("serviceaccount") or {}
        cached = self.cacher.get(f"/registry/core/serviceaccounts/{ns}/{sa.get('name')}")
        if cached is None or cached.obj["metadata"].get("uid") != sa.get("uid") or \
                cached.obj["metadata"].get("deletionTimestamp"):
            return None  # the ServiceAccount is gone (or was recreated): its tokens with it
        extra: dict[str, list[str]] = {}
        for kind in ("pod", "secret"):
            bound = info.get(kind)
            if not isinstance(bound, dict):
                continue
            obj = self.cacher.get(f"/registry/core/{kind}s/{ns}/{bound.get('name')}")
            if obj is None or obj.obj["metadata"].get("uid") != bound.get("uid") or \
                    obj.obj["metadata"].get("deletionTimestamp"):
                return None
            extra[f"authentication.kubernetes.io/{kind}-name"] = [str(bound.get("name"))]
            extra[f"authentication.kubernetes.io/{kind}-uid"] = [str(bound.get("uid"))]
        if claims.get("jti"):
            extra["authentication.kubernetes.io/credential-id"] = [f"JTI={claims['jti']}"]
        return UserInfo(f"system:serviceaccount:{ns}:{sa.get('name')}", str(sa.get("uid") or ""),
                        (GROUP_ALL, f"{GROUP_ALL}:{ns}"), extra)

    # -- discovery -------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/.well-known/openid-configuration", self._openid_configuration)
        router.add_get("/openid/v1/jwks", self._jwks)

    async def _openid_configuration(self, request: web.Request) -> web.Response:
        return http.json_response({
            "issuer": self.issuer, "jwks_uri": f"{self.issuer}/openid/v1/jwks",
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"]})

    async def _jwks(self, request: web.Request) -> web.Response:
        return http.json_response({"keys": [self.jwk]})
