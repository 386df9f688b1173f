"""ServiceAccount tokens: issued by TokenRequest, checked on every request, as upstream.

Tokens are JWTs (ES256) signed with a key kept in ``DATA_DIR/pki/sa.key``
(created once, atomically, so servers sharing a data dir or joined with
``--ca-from`` sign alike), audience- and time-bound, and optionally bound to a
Pod, Secret or Node: a token outlives neither its ServiceAccount nor the object
it is bound to.  Both are checked by uid on every request, with upstream's
minute of leeway for objects being deleted, so a pod shutting down gracefully
can still talk to the API while a deleted one cannot.  Signatures are checked
once per token (a small cache); times and objects on every use.  The issuer's
key is published at ``/openid/v1/jwks`` with an OIDC discovery document, so
outside systems can verify Atoll's tokens too.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from atoll.api import errors
from atoll.api.resources import builtin_type
from atoll.api.resources.core_v1 import NODES, SERVICEACCOUNTS
from atoll.api.timestamps import parse_rfc3339, rfc3339
from atoll.apiserver import http
from atoll.apiserver.authn import UserInfo
from atoll.settings import ServerSettings
from atoll.storage.cacher import Cacher

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 1 << 32
#: kubelet's default for projected tokens; such pod-bound tokens are quietly valid for a year
#: (``warnafter`` marks the requested expiry) so clients that never reload keep working
WARN_ONLY_EXPIRATION = 3607
EXTENDED_EXPIRATION = 365 * 24 * 3600
#: go-jose's default leeway, which upstream uses for times and for deletions
LEEWAY = 60
BINDABLE = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}
GROUP_ALL = "system:serviceaccounts"
EXTRA = "authentication.kubernetes.io/"
GROUP = "authentication.k8s.io"
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class IssuerOptions:
    """kube-apiserver's ``--service-account-*`` and ``--api-audiences`` flags."""

    #: the first signs; all are accepted (to move to a new issuer without breaking tokens)
    issuers: tuple[str, ...] = (DEFAULT_ISSUER,)
    #: what a token must be for to be accepted here; default: the issuers
    audiences: tuple[str, ...] = ()
    #: longer requests are shortened to this, with a warning (0: no cap)
    max_expiration: int = 0
    extend_expiration: bool = True
    #: ``jwks_uri`` of the discovery document; default: this server as the client reached it
    jwks_uri: str = ""


def options_from(settings: ServerSettings) -> IssuerOptions:
    return IssuerOptions(
        issuers=settings.service_account_issuers or (DEFAULT_ISSUER,),
        audiences=settings.api_audiences,
        max_expiration=settings.service_account_max_token_expiration,
        extend_expiration=settings.service_account_extend_token_expiration,
        jwks_uri=settings.service_account_jwks_uri)


def ensure_key(pki_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The signing key, created once: published with link(2), so of several servers starting
    on one data dir at once, one key wins and every server loads that one."""
    path = pki_dir / "sa.key"
    if not path.exists():
        pki_dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd, tmp = tempfile.mkstemp(dir=pki_dir, prefix=".sa.key.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


class TokenIssuer:
    def __init__(self, pki_dir: Path, cacher: Cacher,
                 options: IssuerOptions | None = None) -> None:
        self.options = options or IssuerOptions()
        self.key = ensure_key(pki_dir)
        self.public = self.key.public_key()
        self.cacher = cacher
        self.issuer = self.options.issuers[0]
        self.audiences = self.options.audiences or self.options.issuers
        self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.public))
        der = self.public.public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = jwt.utils.base64url_encode(hashlib.sha256(der).digest()).decode()
        self.jwk.update({"kid": self.kid, "use": "sig", "alg": "ES256"})
        #: token → its verified claims (signature, issuer, audience: they never change)
        self._verified: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()

    # -- issuing -----------------------------------------------------------------------------
    def token_request(self, sa: dict[str, Any], body: dict[str, Any]
                      ) -> tuple[dict[str, Any], list[str]]:
        """Answer a TokenRequest for ServiceAccount ``sa``: the TokenRequest and warnings."""
        ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        for field, want in (("name", name), ("namespace", ns)):
            if meta.get(field) and meta[field] != want:
                raise errors.invalid("TokenRequest", name, [errors.invalid_value(
                    f"metadata.{field}", meta[field],
                    f"must match the service account {field} if specified")], GROUP)
        spec = body.get("spec", {})
        if not isinstance(spec, dict):
            raise errors.BadRequest("TokenRequest.spec must be an object")
        audiences = spec.get("audiences") or list(self.audiences)
        seconds = spec.get("expirationSeconds")
        seconds = DEFAULT_EXPIRATION if seconds is None else seconds
        causes: list[errors.Cause] = []
        if not isinstance(audiences, list) or not all(isinstance(a, str) and a
                                                      for a in audiences):
            causes.append(errors.invalid_value("spec.audiences", audiences,
                                               "must be a list of non-empty strings"))
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            causes.append(errors.invalid_value("spec.expirationSeconds", seconds,
                                               "must be an integer"))
        elif seconds < MIN_EXPIRATION:
            causes.append(errors.invalid_value("spec.expirationSeconds", seconds,
                                               "may not specify a duration less than 10 minutes"))
        elif seconds > MAX_EXPIRATION:
            causes.append(errors.invalid_value("spec.expirationSeconds", seconds,
                                               "may not specify a duration larger than 2^32 "
                                               "seconds"))
        if causes:
            raise errors.invalid("TokenRequest", "", causes, GROUP)
        bound = self._bound_objects(spec.get("boundObjectRef"), ns, name)
        warnings: list[str] = []
        cap = self.options.max_expiration
        if cap > 0 and seconds > cap:
            warnings.append(f"requested expiration of {seconds} seconds shortened to {cap} "
                            "seconds")
            seconds = cap
        now = int(time.time())
        lifetime, private = seconds, {"namespace": ns, "serviceaccount": {
            "name": name, "uid": sa["metadata"]["uid"]}, **bound}
        if self.options.extend_expiration and "pod" in bound and \
                seconds == WARN_ONLY_EXPIRATION and set(audiences) <= set(self.audiences):
            private["warnafter"] = now + seconds
            lifetime = EXTENDED_EXPIRATION
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": f"system:serviceaccount:{ns}:{name}",
            "aud": audiences, "iat": now, "nbf": now, "exp": now + lifetime,
            "jti": str(uuid.uuid4()), "kubernetes.io": private}
        token = jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})
        answer = {"apiVersion": f"{GROUP}/v1", "kind": "TokenRequest",
                  "metadata": {"name": name, "namespace": ns, "creationTimestamp": rfc3339(now)},
                  "spec": {"audiences": audiences, "expirationSeconds": seconds,
                           "boundObjectRef": spec.get("boundObjectRef")},
                  "status": {"token": token, "expirationTimestamp": rfc3339(now + seconds)}}
        return answer, warnings

    def _bound_objects(self, ref: Any, ns: str, sa_name: str) -> dict[str, dict[str, str]]:
        """The claims naming what the token is bound to (upstream's error for each misuse)."""
        if not ref:
            return {}
        if not isinstance(ref, dict):
            raise errors.BadRequest("spec.boundObjectRef must be an object")
        api_version, kind = str(ref.get("apiVersion") or "v1"), str(ref.get("kind") or "")
        if "/" in api_version or kind not in BINDABLE:
            group, _, version = api_version.rpartition("/")
            raise errors.BadRequest(f"cannot bind token to object of type {group}/{version}, "
                                    f"Kind={kind}")
        name = ref.get("name")
        if not isinstance(name, str) or not name:
            raise errors.BadRequest("spec.boundObjectRef.name is required")
        plural = BINDABLE[kind]
        cached = self.cacher.get(builtin_type("", plural).key(ns, name))
        if cached is None:
            raise errors.NotFound(f'{plural} "{name}" not found', name=name, kind=plural)
        obj = cached.obj
        uid = obj["metadata"].get("uid", "")
        if kind == "Pod" and ((obj.get("spec") or {}).get("serviceAccountName")
                              or "default") != sa_name:
            raise errors.BadRequest(f'cannot bind token for serviceaccount "{sa_name}" to pod '
                                    "running with different serviceaccount name.")
        if ref.get("uid") and ref["uid"] != uid:
            raise errors.Conflict(
                f'Operation cannot be fulfilled on {kind} "{name}": the UID in the bound object '
                f"reference ({ref['uid']}) does not match the UID in record. The object might "
                "have been deleted and then recreated", name=name, kind=kind)
        claims = {kind.lower(): {"name": name, "uid": uid}}
        node = (obj.get("spec") or {}).get("nodeName") if kind == "Pod" else None
        if isinstance(node, str) and node:
            found = self.cacher.get(NODES.key("", node))
            claims["node"] = {"name": node}
            if found is not None:
                claims["node"]["uid"] = found.obj["metadata"].get("uid", "")
        return claims

    # -- checking ------------------------------------------------------------------------------
    async def authenticate(self, token: str) -> UserInfo | None:
        """The ServiceAccount behind a valid token; None for anything else (then 401)."""
        claims = self._claims(token)
        if claims is None:
            return None
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not isinstance(exp, (int, float)) or exp + LEEWAY < now or \
                (isinstance(nbf, (int, float)) and nbf - LEEWAY > now):
            return None
        info = claims.get("kubernetes.io")
        if not isinstance(info, dict) or not isinstance(info.get("namespace"), str):
            return None
        ns = info["namespace"]
        sa = info.get("serviceaccount")
        if not isinstance(sa, dict) or not self._alive(
                SERVICEACCOUNTS.key(ns, sa.get("name")), sa, now):
            return None  # the ServiceAccount is gone (or was recreated): its tokens with it
        extra: dict[str, list[str]] = {}
        for kind in ("secret", "pod", "node"):
            ref = info.get(kind)
            if ref is None:
                continue
            if not isinstance(ref, dict):
                return None
            # a pod-bound token names its node for information only: the pod is what binds it
            checked = kind != "node" or "pod" not in info
            key = builtin_type("", f"{kind}s").key(ns, ref.get("name"))
            if checked and not self._alive(key, ref, now):
                return None
            if kind != "secret":
                extra[f"{EXTRA}{kind}-name"] = [str(ref.get("name"))]
                if ref.get("uid"):
                    extra[f"{EXTRA}{kind}-uid"] = [str(ref["uid"])]
        if claims.get("jti"):
            extra[f"{EXTRA}credential-id"] = [f"JTI={claims['jti']}"]
        return UserInfo(f"system:serviceaccount:{ns}:{sa.get('name')}", str(sa.get("uid") or ""),
                        (GROUP_ALL, f"{GROUP_ALL}:{ns}"), extra)

    def _claims(self, token: str) -> dict[str, Any] | None:
        """Claims of a token this issuer signed for this server's audiences (cached)."""
        claims = self._verified.get(token)
        if claims is not None:
            self._verified.move_to_end(token)
            return claims
        if token.count(".") != 2 or len(token) > 16384:
            return None
        try:
            claims = jwt.decode(token, self.public, algorithms=["ES256"],
                                audience=list(self.audiences), issuer=list(self.options.issuers),
                                options={"require": ["exp", "iat", "sub", "aud", "iss"],
                                         "verify_exp": False, "verify_nbf": False,
                                         "verify_iat": False})
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        self._verified[token] = claims
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return claims

    def _alive(self, key: str, ref: dict[str, Any], now: float) -> bool:
        """The object still exists with the token's uid, and was not deleted over a minute ago."""
        cached = self.cacher.get(key)
        if cached is None or cached.obj["metadata"].get("uid") != ref.get("uid"):
            return False
        deleted = parse_rfc3339(cached.obj["metadata"].get("deletionTimestamp"))
        return deleted is None or deleted >= now - LEEWAY

    # -- discovery -------------------------------------------------------------------------------
    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/.well-known/openid-configuration", self._openid_configuration)
        router.add_get("/openid/v1/jwks", self._jwks)

    async def _openid_configuration(self, request: web.Request) -> web.Response:
        jwks_uri = self.options.jwks_uri
        if not jwks_uri:
            host = request.host if _HOST.match(request.host or "") else ""
            jwks_uri = f"https://{host}/openid/v1/jwks" if host else \
                f"{self.issuer}/openid/v1/jwks"
        return http.json_response({
            "issuer": self.issuer, "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"]},
            headers={"Cache-Control": "public, max-age=3600"})

    async def _jwks(self, request: web.Request) -> web.Response:
        return http.json_response({"keys": [self.jwk]}, content_type="application/jwk-set+json",
                                  headers={"Cache-Control": "public, max-age=3600"})
