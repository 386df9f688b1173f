"""ServiceAccounts: a default one per namespace, TokenRequest (`kubectl create token`), tokens
projected into pods and refreshed, checked on every request and revoked with their pod."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import yaml

from tests.conftest import Platform, kubectl_binary, wait_until

MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def as_token(platform: Platform, token: str, tmp: Path, *args: str
             ) -> subprocess.CompletedProcess[str]:
    """kubectl with nothing but a bearer token (and the cluster CA)."""
    admin = yaml.safe_load(platform.kubeconfig.read_text())
    kc = tmp / f"token-{abs(hash(token)) % 10**8}.kubeconfig"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": "t", "user": {"token": token}}],
        "contexts": [{"name": "t", "context": {"cluster": admin["clusters"][0]["name"],
                                               "user": "t"}}],
        "current-context": "t"}))
    return subprocess.run([kubectl_binary(), "--kubeconfig", str(kc), *args],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, KUBECACHEDIR=str(tmp / "cache")))


def whoami(platform: Platform, token: str, tmp: Path) -> dict:
    out = as_token(platform, token, tmp, "auth", "whoami", "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["status"]["userInfo"]


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_every_namespace_gets_a_default_account_and_the_ca(platform: Platform,
                                                           namespace: str) -> None:
    wait_until("the default ServiceAccount", lambda: platform.kubectl(
        "-n", namespace, "get", "sa", "default", check=False).returncode == 0)
    cm = wait_until("kube-root-ca.crt", lambda: (out := platform.kubectl(
        "-n", namespace, "get", "cm", "kube-root-ca.crt", "-o", "json", check=False))
        .returncode == 0 and json.loads(out.stdout))
    assert cm["data"]["ca.crt"] == (platform.data_dir / "pki" / "ca.crt").read_text()
    platform.kubectl("-n", namespace, "delete", "sa", "default")
    wait_until("the default ServiceAccount back", lambda: platform.kubectl(
        "-n", namespace, "get", "sa", "default", check=False).returncode == 0)


def test_create_token_and_use_it(platform: Platform, namespace: str, tmp_path: Path) -> None:
    platform.kubectl("-n", namespace, "create", "sa", "robot")
    token = platform.kubectl("-n", namespace, "create", "token", "robot",
                             "--duration", "15m").stdout.strip()
    c = claims(token)
    assert c["sub"] == f"system:serviceaccount:{namespace}:robot"
    assert 890 <= c["exp"] - c["iat"] <= 910
    user = whoami(platform, token, tmp_path)
    assert user["username"] == f"system:serviceaccount:{namespace}:robot"
    assert set(user["groups"]) >= {"system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                   "system:authenticated"}
    # RBAC binds ServiceAccounts like anyone else
    assert as_token(platform, token, tmp_path, "-n", namespace, "get", "pods").returncode != 0
    platform.kubectl("-n", namespace, "create", "rolebinding", "robot-view", "--clusterrole=view",
                     f"--serviceaccount={namespace}:robot")
    wait_until("the binding to take effect", lambda: as_token(
        platform, token, tmp_path, "-n", namespace, "get", "pods").returncode == 0, 10)
    # another audience is not for this server; a tampered token is nobody's
    other = platform.kubectl("-n", namespace, "create", "token", "robot", "--audience",
                             "vault").stdout.strip()
    head, body, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged["sub"] = "system:serviceaccount:kube-system:admin"
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    for bad in (other, f"{head}.{forged_body}.{sig}", token[:-4] + "AAAA"):
        out = as_token(platform, bad, tmp_path, "auth", "whoami")
        assert out.returncode != 0 and "Unauthorized" in out.stderr, out
    # the account's deletion revokes its tokens
    platform.kubectl("-n", namespace, "delete", "sa", "robot")
    wait_until("the token revoked", lambda: as_token(
        platform, token, tmp_path, "auth", "whoami").returncode != 0, 10)


def test_token_request_checks_its_input(platform: Platform, namespace: str) -> None:
    platform.kubectl("-n", namespace, "create", "sa", "short")
    out = platform.kubectl("-n", namespace, "create", "token", "short", "--duration", "5m",
                           check=False)
    assert out.returncode != 0 and "spec.expirationSeconds" in out.stderr, out.stderr
    out = platform.kubectl("-n", namespace, "create", "token", "nobody", check=False)
    assert "NotFound" in out.stderr or "not found" in out.stderr
    out = platform.kubectl("-n", namespace, "create", "token", "short", "--bound-object-kind",
                           "Pod", "--bound-object-name", "ghost", check=False)
    assert out.returncode != 0 and "not found" in out.stderr


def test_pods_get_a_bound_token_that_dies_with_them(platform: Platform, namespace: str,
                                                    tmp_path: Path) -> None:
    wait_until("the default ServiceAccount", lambda: platform.kubectl(
        "-n", namespace, "get", "sa", "default", check=False).returncode == 0)
    platform.kubectl("-n", namespace, "run", "app", "--image=busybox", "--", "sleep", "3600")
    pod = wait_until("the pod running", lambda: (p := json.loads(platform.kubectl(
        "-n", namespace, "get", "pod", "app", "-o", "json").stdout)).get("status", {}).get(
        "phase") == "Running" and p, 60)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-"))
    assert {"serviceAccountToken", "configMap", "downwardAPI"} == {
        k for s in volume["projected"]["sources"] for k in s}
    files = platform.kubectl("-n", namespace, "exec", "app", "--", "sh", "-c",
                             f"cat {MOUNT}/namespace; echo; cat {MOUNT}/token").stdout.split()
    assert files[0] == namespace
    token = files[1]
    c = claims(token)
    assert c["kubernetes.io"]["pod"] == {"name": "app", "uid": pod["metadata"]["uid"]}
    assert 3500 < c["exp"] - c["iat"] < 3700
    user = whoami(platform, token, tmp_path)
    assert user["username"] == f"system:serviceaccount:{namespace}:default"
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["app"]
    platform.kubectl("-n", namespace, "delete", "pod", "app", "--grace-period=0", "--force")
    wait_until("the pod's token revoked", lambda: as_token(
        platform, token, tmp_path, "auth", "whoami").returncode != 0, 30)


def test_opting_out_and_unknown_accounts(platform: Platform, namespace: str) -> None:
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quiet", "namespace": namespace},
        "spec": {"automountServiceAccountToken": False,
                 "containers": [{"name": "c", "image": "busybox"}]}}))
    pod = json.loads(platform.kubectl("-n", namespace, "get", "pod", "quiet", "-o",
                                      "json").stdout)
    assert not pod["spec"].get("volumes") and pod["spec"]["serviceAccountName"] == "default"
    out = platform.kubectl("apply", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "who", "namespace": namespace},
        "spec": {"serviceAccountName": "ghost", "containers": [{"name": "c",
                                                                "image": "busybox"}]}}))
    assert out.returncode != 0 and 'serviceaccount "ghost" not found' in out.stderr


def test_issuer_discovery(platform: Platform, namespace: str, tmp_path: Path) -> None:
    doc = json.loads(platform.kubectl("get", "--raw", "/.well-known/openid-configuration").stdout)
    keys = json.loads(platform.kubectl("get", "--raw", "/openid/v1/jwks").stdout)["keys"]
    assert doc["jwks_uri"].endswith("/openid/v1/jwks") and keys[0]["alg"] == "ES256"
    token = platform.kubectl("-n", namespace, "create", "token", "default").stdout.strip()
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["kid"] == keys[0]["kid"]
    # ServiceAccounts may read it, as upstream's system:service-account-issuer-discovery says
    assert as_token(platform, token, tmp_path, "get", "--raw",
                    "/openid/v1/jwks").returncode == 0
