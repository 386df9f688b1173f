"""TokenReview (what extension servers and webhooks call to check a bearer token) and the
storage.k8s.io CSIStorageCapacity kind."""

from __future__ import annotations

import json

from tests.conftest import Platform


def review(platform: Platform, token: str) -> dict:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token}}
    return json.loads(platform.kubectl("create", "-f", "-", "-o", "json",
                                       input=json.dumps(body)).stdout)["status"]


def test_a_service_account_token_is_reviewed(platform: Platform, namespace: str) -> None:
    token = platform.kubectl("-n", namespace, "create", "token", "default").stdout.strip()
    status = review(platform, token)
    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:default"
    assert "system:serviceaccounts" in status["user"]["groups"]
    bad = review(platform, token[:-4] + "AAAA")
    assert not bad.get("authenticated") and bad.get("error")


def test_auth_delegator_role_exists(platform: Platform) -> None:
    role = json.loads(platform.kubectl("get", "clusterrole", "system:auth-delegator", "-o",
                                       "json").stdout)
    resources = {r for rule in role["rules"] for r in rule.get("resources", [])}
    assert {"tokenreviews", "subjectaccessreviews"} <= resources


def test_csi_storage_capacity_is_served_and_validated(platform: Platform,
                                                      namespace: str) -> None:
    good = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity",
            "metadata": {"name": "cap", "namespace": namespace},
            "storageClassName": "local", "capacity": "10Gi"}
    platform.kubectl("apply", "-f", "-", input=json.dumps(good))
    got = json.loads(platform.kubectl("-n", namespace, "get", "csistoragecapacities", "cap",
                                      "-o", "json").stdout)
    assert got["capacity"] == "10Gi"
    bad = dict(good, metadata={"name": "nocls", "namespace": namespace})
    del bad["storageClassName"]
    out = platform.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0 and "storageClassName" in out.stderr
