"""The token issuer's rules that e2e tests cannot reach quickly: time leeway, deletion grace,
the one-year extension of kubelet's tokens, node binding, and one key for racing servers."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from atoll.api import errors
from atoll.apiserver import serviceaccounts as sa_tokens


@dataclass
class Cached:
    obj: dict[str, Any]


class Objects:
    """The watch cache's ``get`` over a dict of stored objects, keyed as the store keys them."""

    def __init__(self) -> None:
        self.objects: dict[str, Cached] = {}

    def put(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[key] = Cached(obj)
        return obj

    def get(self, key: str) -> Cached | None:
        return self.objects.get(key)


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@pytest.fixture
def world(tmp_path: Path) -> tuple[sa_tokens.TokenIssuer, Objects]:
    objects = Objects()
    issuer = sa_tokens.TokenIssuer(tmp_path, objects)  # type: ignore[arg-type]
    objects.put("/registry/core/serviceaccounts/ns/robot", {
        "metadata": {"name": "robot", "namespace": "ns", "uid": "sa-uid"}})
    objects.put("/registry/core/nodes/host-1", {"metadata": {"name": "host-1", "uid": "node-uid"}})
    objects.put("/registry/core/pods/ns/app", {
        "metadata": {"name": "app", "namespace": "ns", "uid": "pod-uid"},
        "spec": {"serviceAccountName": "robot", "nodeName": "host-1"}})
    return issuer, objects


def request(issuer: sa_tokens.TokenIssuer, objects: Objects, **spec: Any) -> str:
    sa = objects.get("/registry/core/serviceaccounts/ns/robot")
    assert sa is not None
    answer, _ = issuer.token_request(sa.obj, {"spec": spec})
    return answer["status"]["token"]


def who(issuer: sa_tokens.TokenIssuer, token: str) -> Any:
    return asyncio.run(issuer.authenticate(token))


def forge(issuer: sa_tokens.TokenIssuer, **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": issuer.issuer, "sub": "system:serviceaccount:ns:robot",
              "aud": list(issuer.audiences), "iat": now, "nbf": now, "exp": now + 600,
              "kubernetes.io": {"namespace": "ns",
                                "serviceaccount": {"name": "robot", "uid": "sa-uid"}}}
    claims.update(changes)
    return jwt.encode(claims, issuer.key, algorithm="ES256")


def test_times_are_checked_with_a_minute_of_leeway(world) -> None:
    issuer, _ = world
    now = int(time.time())
    assert who(issuer, forge(issuer)).name == "system:serviceaccount:ns:robot"
    assert who(issuer, forge(issuer, exp=now - 30)) is not None  # within go-jose's leeway
    assert who(issuer, forge(issuer, exp=now - 120)) is None
    assert who(issuer, forge(issuer, nbf=now + 600)) is None
    assert who(issuer, forge(issuer, iss="https://elsewhere")) is None
    assert who(issuer, forge(issuer, aud=["vault"])) is None


def test_objects_being_deleted_keep_their_tokens_for_a_minute(world) -> None:
    issuer, objects = world
    token = request(issuer, objects, boundObjectRef={"kind": "Pod", "name": "app"})
    user = who(issuer, token)
    assert user.extra["authentication.kubernetes.io/pod-uid"] == ["pod-uid"]
    assert user.extra["authentication.kubernetes.io/node-name"] == ["host-1"]
    assert user.extra["authentication.kubernetes.io/node-uid"] == ["node-uid"]
    pod = objects.get("/registry/core/pods/ns/app").obj
    pod["metadata"]["deletionTimestamp"] = rfc3339(time.time() + 30)  # graceful shutdown
    assert who(issuer, token) is not None
    pod["metadata"]["deletionTimestamp"] = rfc3339(time.time() - 30)
    assert who(issuer, token) is not None
    pod["metadata"]["deletionTimestamp"] = rfc3339(time.time() - 120)
    assert who(issuer, token) is None
    pod["metadata"].pop("deletionTimestamp")
    pod["metadata"]["uid"] = "another-pod-uid"  # deleted and created again
    assert who(issuer, token) is None


def test_kubelet_tokens_are_extended_and_marked(world) -> None:
    issuer, objects = world
    pod_ref = {"kind": "Pod", "name": "app", "uid": "pod-uid"}
    claims = jwt.decode(request(issuer, objects, expirationSeconds=3607, boundObjectRef=pod_ref),
                        options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == sa_tokens.EXTENDED_EXPIRATION
    assert claims["kubernetes.io"]["warnafter"] - claims["iat"] == 3607
    for other in ({"expirationSeconds": 3600, "boundObjectRef": pod_ref},
                  {"expirationSeconds": 3607},
                  {"expirationSeconds": 3607, "boundObjectRef": pod_ref, "audiences": ["x"]}):
        claims = jwt.decode(request(issuer, objects, **other),
                            options={"verify_signature": False, "verify_aud": False})
        assert "warnafter" not in claims["kubernetes.io"] and claims["exp"] - claims["iat"] < 3700


def test_binding_rules(world) -> None:
    issuer, objects = world
    token = request(issuer, objects, boundObjectRef={"kind": "Node", "name": "host-1"})
    assert who(issuer, token).extra["authentication.kubernetes.io/node-uid"] == ["node-uid"]
    objects.objects.pop("/registry/core/nodes/host-1")
    assert who(issuer, token) is None
    with pytest.raises(errors.BadRequest, match="apps/v1, Kind=Deployment"):
        request(issuer, objects, boundObjectRef={"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": "d"})
    with pytest.raises(errors.Conflict):
        request(issuer, objects, boundObjectRef={"kind": "Pod", "name": "app", "uid": "old"})
    objects.get("/registry/core/pods/ns/app").obj["spec"]["serviceAccountName"] = "default"
    with pytest.raises(errors.BadRequest, match="different serviceaccount"):
        request(issuer, objects, boundObjectRef={"kind": "Pod", "name": "app"})
    with pytest.raises(errors.Invalid) as err:
        request(issuer, objects, expirationSeconds=(1 << 32) + 1)
    assert err.value.causes[0].field == "spec.expirationSeconds"


def test_a_capped_issuer_shortens_with_a_warning(tmp_path: Path, world) -> None:
    _, objects = world
    capped = sa_tokens.TokenIssuer(tmp_path, objects,  # type: ignore[arg-type]
                                   sa_tokens.IssuerOptions(max_expiration=900))
    answer, warnings = capped.token_request(
        objects.get("/registry/core/serviceaccounts/ns/robot").obj,
        {"spec": {"expirationSeconds": 7200}})
    assert answer["spec"]["expirationSeconds"] == 900
    assert warnings == ["requested expiration of 7200 seconds shortened to 900 seconds"]


def _public_key(directory: str) -> str:
    from atoll.apiserver.serviceaccounts import ensure_key

    return str(ensure_key(Path(directory)).public_key().public_numbers())


def test_servers_starting_together_share_one_key(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_public_key, [str(tmp_path / "pki")] * 8)
    assert len(set(keys)) == 1
    assert [p.name for p in (tmp_path / "pki").iterdir()] == ["sa.key"]


def test_joined_servers_sign_with_the_first_ones_key(tmp_path: Path) -> None:
    from atoll.apiserver import pki
    from atoll.cli.server_cmd import join_ca

    first, second = tmp_path / "one", tmp_path / "two"
    pki.ensure_ca(first / "pki")
    _public_key(str(first / "pki"))
    join_ca(second, first)
    assert _public_key(str(second / "pki")) == _public_key(str(first / "pki"))
