"""ServiceAccounts: a default one per namespace, TokenRequest (`kubectl create token`), tokens
projected into pods and refreshed, checked on every request and revoked with their pod."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import (TEST_NODE, Platform, free_port, kubectl_binary, start_platform,
                            stop_platform, wait_until)

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


def api(platform: Platform, method: str, path: str, *, token: str | None = None,
        body: Any = None, raw: bytes | None = None) -> tuple[int, dict]:
    """One HTTPS request: with only a bearer token if given, else as the administrator."""
    if token is None:
        ctx = platform.ssl_context()
    else:
        ctx = ssl.create_default_context(cafile=str(platform.data_dir / "pki" / "ca.crt"))
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(platform.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def review(platform: Platform, token: str) -> tuple[int, dict]:
    """SelfSubjectReview with the token alone: 201 and the user, or the 401 Status."""
    return api(platform, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
               token=token, body={"apiVersion": "authentication.k8s.io/v1",
                                  "kind": "SelfSubjectReview"})


def assert_401(platform: Platform, token: str) -> None:
    code, status = review(platform, token)
    assert (code, status.get("kind"), status.get("reason"), status.get("code")) == (
        401, "Status", "Unauthorized", 401), status


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
    shown = platform.kubectl("--token", token, "auth", "whoami").stdout.split()
    assert shown[shown.index("Username") + 1] == f"system:serviceaccount:{namespace}:robot"
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
    assert c["kubernetes.io"]["node"]["name"] == pod["spec"]["nodeName"]
    # kubelet's one-hour token: rewritten hourly, yet valid for a year for clients that never
    # reload it (upstream's --service-account-extend-token-expiration)
    assert c["kubernetes.io"]["warnafter"] - c["iat"] == 3607
    assert c["exp"] - c["iat"] == 365 * 24 * 3600
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


def test_refused_tokens_are_401_statuses(platform: Platform, namespace: str) -> None:
    platform.kubectl("-n", namespace, "create", "sa", "robot")
    token = platform.kubectl("-n", namespace, "create", "token", "robot").stdout.strip()
    code, answer = review(platform, token)
    assert code == 201 and answer["status"]["userInfo"]["uid"] == json.loads(platform.kubectl(
        "-n", namespace, "get", "sa", "robot", "-o", "json").stdout)["metadata"]["uid"]
    key = serialization.load_pem_private_key(
        (platform.data_dir / "pki" / "sa.key").read_bytes(), password=None)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    now = int(time.time())

    def signed(changes: dict, with_key: Any = key, alg: str = "ES256") -> str:
        return jwt.encode({**claims(token), **changes}, with_key, algorithm=alg,
                          headers={"kid": header["kid"]})

    assert review(platform, signed({}))[0] == 201  # the server's own key, unchanged claims
    head, body, sig = token.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged["kubernetes.io"]["namespace"] = "kube-system"
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    for bad in (
            f"{head}.{forged_body}.{sig}",                                   # tampered claims
            token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB"),  # signature
            signed({"exp": now - 120, "iat": now - 1200, "nbf": now - 1200}),  # expired
            signed({"nbf": now + 600}),                                      # not yet valid
            signed({"aud": ["vault"]}),                                      # another audience
            signed({"iss": "https://elsewhere.example"}),                    # another issuer
            signed({}, ec.generate_private_key(ec.SECP256R1())),             # another key
            signed({}, None, "none"),                                        # no signature
            platform.kubectl("-n", namespace, "create", "token", "robot", "--audience",
                             "vault").stdout.strip(),
            "not.a.jwt", "x" * 5000):
        assert_401(platform, bad)
    platform.kubectl("-n", namespace, "delete", "sa", "robot")
    assert_401(platform, token)
    platform.kubectl("-n", namespace, "create", "sa", "robot")  # the same name, a new uid
    assert_401(platform, token)


def test_token_request_errors_name_their_field(platform: Platform, namespace: str) -> None:
    platform.kubectl("-n", namespace, "create", "sa", "robot")
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/robot/token"
    tr = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
    code, status = api(platform, "POST", path, body={**tr, "spec": {"expirationSeconds": 300}})
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "spec.expirationSeconds"
    assert "may not specify a duration less than 10 minutes" in status["message"]
    code, status = api(platform, "POST", path, body={**tr, "metadata": {"name": "other"}})
    assert code == 422 and status["details"]["causes"][0]["field"] == "metadata.name"
    code, status = api(platform, "POST", path, body={**tr, "spec": {"boundObjectRef": {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}}})
    assert (code, status["reason"]) == (400, "BadRequest"), status
    for body in ({**tr, "spec": "soon"}, {**tr, "spec": {"audiences": "everyone"}},
                 {**tr, "spec": {"expirationSeconds": "3600"}}):
        code, status = api(platform, "POST", path, body=body)
        assert code in (400, 422) and status["kind"] == "Status", (body, status)
    code, status = api(platform, "POST", path, raw=b"{not json")
    assert code == 400 and status["kind"] == "Status"
    code, status = api(platform, "POST", path.replace("robot", "ghost"), body=tr)
    assert code == 404
    code, answer = api(platform, "POST", path, body={**tr, "spec": {"expirationSeconds": 600}})
    assert code == 201 and answer["spec"]["expirationSeconds"] == 600
    assert answer["spec"]["audiences"] == ["https://kubernetes.default.svc.cluster.local"]


def test_tokens_bound_to_a_secret_or_a_node(platform: Platform, namespace: str,
                                            tmp_path: Path) -> None:
    platform.kubectl("-n", namespace, "create", "sa", "robot")
    platform.kubectl("-n", namespace, "create", "secret", "generic", "anchor")
    token = platform.kubectl("-n", namespace, "create", "token", "robot", "--bound-object-kind",
                             "Secret", "--bound-object-name", "anchor").stdout.strip()
    assert claims(token)["kubernetes.io"]["secret"]["name"] == "anchor"
    assert whoami(platform, token, tmp_path)["username"] == \
        f"system:serviceaccount:{namespace}:robot"
    platform.kubectl("-n", namespace, "delete", "secret", "anchor")
    assert_401(platform, token)
    token = platform.kubectl("-n", namespace, "create", "token", "robot", "--bound-object-kind",
                             "Node", "--bound-object-name", TEST_NODE).stdout.strip()
    node = json.loads(platform.kubectl("get", "node", TEST_NODE, "-o", "json").stdout)
    assert whoami(platform, token, tmp_path)["extra"] == {
        "authentication.kubernetes.io/node-name": [TEST_NODE],
        "authentication.kubernetes.io/node-uid": [node["metadata"]["uid"]],
        "authentication.kubernetes.io/credential-id": [f"JTI={claims(token)['jti']}"]}


def test_a_terminating_pod_keeps_its_token_until_it_is_gone(platform: Platform,
                                                            namespace: str) -> None:
    wait_until("the default ServiceAccount", lambda: platform.kubectl(
        "-n", namespace, "get", "sa", "default", check=False).returncode == 0)
    # never scheduled, held by a finalizer: deleted, yet still there, as while shutting down
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "hold", "namespace": namespace, "finalizers": ["example.com/hold"]},
        "spec": {"nodeSelector": {"example.com/nowhere": "true"},
                 "containers": [{"name": "c", "image": "busybox"}]}}))
    uid = json.loads(platform.kubectl("-n", namespace, "get", "pod", "hold", "-o",
                                      "json").stdout)["metadata"]["uid"]
    token = platform.kubectl("-n", namespace, "create", "token", "default", "--bound-object-kind",
                             "Pod", "--bound-object-name", "hold", "--bound-object-uid",
                             uid).stdout.strip()
    assert review(platform, token)[0] == 201
    platform.kubectl("-n", namespace, "delete", "pod", "hold", "--wait=false")
    assert json.loads(platform.kubectl("-n", namespace, "get", "pod", "hold", "-o", "json")
                      .stdout)["metadata"].get("deletionTimestamp")
    code, answer = review(platform, token)
    assert code == 201 and answer["status"]["userInfo"]["extra"][
        "authentication.kubernetes.io/pod-uid"] == [uid]
    platform.kubectl("-n", namespace, "patch", "pod", "hold", "--type", "json", "-p",
                     '[{"op": "remove", "path": "/metadata/finalizers"}]')
    wait_until("the pod gone", lambda: platform.kubectl(
        "-n", namespace, "get", "pod", "hold", check=False).returncode != 0)
    assert_401(platform, token)


def test_pods_are_told_where_the_api_server_is(platform: Platform, namespace: str) -> None:
    wait_until("the default ServiceAccount", lambda: platform.kubectl(
        "-n", namespace, "get", "sa", "default", check=False).returncode == 0)
    platform.kubectl("-n", namespace, "create", "rolebinding", "default-view",
                     "--clusterrole=view", f"--serviceaccount={namespace}:default")
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": namespace},
        "spec": {"containers": [
            {"name": "c", "image": "busybox", "command": ["sleep", "3600"]},
            {"name": "own", "image": "busybox", "command": ["sleep", "3600"],
             "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "api.example"}]}]}}))
    platform.kubectl("-n", namespace, "wait", "--for=condition=Ready", "pod/client",
                     "--timeout=60s")
    env = dict(line.split("=", 1) for line in platform.kubectl(
        "-n", namespace, "exec", "client", "-c", "c", "--", "env").stdout.splitlines()
        if "=" in line)
    assert env["KUBERNETES_SERVICE_PORT"] == str(platform.port)
    assert env["KUBERNETES_PORT"] == f"tcp://{env['KUBERNETES_SERVICE_HOST']}:{platform.port}"
    assert env["KUBERNETES_SERVICE_HOST"] not in ("", "127.0.0.1")
    assert platform.kubectl("-n", namespace, "exec", "client", "-c", "own", "--", "sh", "-c",
                            "echo $KUBERNETES_SERVICE_HOST").stdout.strip() == "api.example"
    # the address answers inside the pod (busybox's own TLS client is too old for OpenSSL 3
    # servers: it sends no signature_algorithms, so a TCP connection is what is checked there)
    out = platform.kubectl("-n", namespace, "exec", "client", "-c", "c", "--", "sh", "-c",
                           "echo | nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT",
                           check=False, timeout=60)
    assert out.returncode == 0, out
    # ... and what an in-cluster client does with it: verify the server against the mounted
    # ca.crt under that address, and present the mounted token
    files = {f: platform.kubectl("-n", namespace, "exec", "client", "-c", "c", "--", "cat",
                                 f"{MOUNT}/{f}").stdout for f in ("token", "ca.crt", "namespace")}
    ctx = ssl.create_default_context(cadata=files["ca.crt"])
    req = urllib.request.Request(
        f"https://{env['KUBERNETES_SERVICE_HOST']}:{env['KUBERNETES_SERVICE_PORT']}"
        f"/api/v1/namespaces/{files['namespace']}/pods/client",
        headers={"Authorization": f"Bearer {files['token']}"})
    with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
        assert json.loads(r.read())["metadata"]["name"] == "client"


def test_admission_mounts_the_token_where_nothing_else_is(platform: Platform,
                                                         namespace: str) -> None:
    wait_until("the default ServiceAccount", lambda: platform.kubectl(
        "-n", namespace, "get", "sa", "default", check=False).returncode == 0)
    own = {"name": "own", "mountPath": MOUNT}
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mixed", "namespace": namespace},
        "spec": {"nodeSelector": {"example.com/nowhere": "true"},
                 "volumes": [{"name": "own", "emptyDir": {}}],
                 "initContainers": [{"name": "init", "image": "busybox"}],
                 "containers": [{"name": "a", "image": "busybox"},
                                {"name": "b", "image": "busybox", "volumeMounts": [own]}]}}))
    spec = json.loads(platform.kubectl("-n", namespace, "get", "pod", "mixed", "-o",
                                       "json").stdout)["spec"]
    access = [v["name"] for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert len(access) == 1 and spec["serviceAccountName"] == "default"
    mounts = {c["name"]: c.get("volumeMounts") for c in spec["initContainers"] +
              spec["containers"]}
    expected = {"name": access[0], "readOnly": True, "mountPath": MOUNT}
    assert mounts == {"init": [expected], "a": [expected], "b": [own]}
    # a pod copied from another keeps the volume it brings, and gets no second one
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "copy", "namespace": namespace},
        "spec": {**spec, "nodeName": None, "containers": [
            {"name": "a", "image": "busybox", "volumeMounts": [expected]},
            {"name": "new", "image": "busybox"}]}}))
    spec = json.loads(platform.kubectl("-n", namespace, "get", "pod", "copy", "-o",
                                       "json").stdout)["spec"]
    assert [v["name"] for v in spec["volumes"] if v["name"].startswith("kube-api")] == access
    assert all(c["volumeMounts"] == [expected] for c in spec["containers"])


def test_signing_key_survives_a_restart(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    p = start_platform(data, port, "--no-controllers", "--no-agent")
    try:
        p.kubectl("create", "sa", "keeper")
        token = p.kubectl("create", "token", "keeper").stdout.strip()
        jwks = p.kubectl("get", "--raw", "/openid/v1/jwks").stdout
    finally:
        stop_platform(p)
    p = start_platform(data, port, "--no-controllers", "--no-agent")
    try:
        assert p.kubectl("get", "--raw", "/openid/v1/jwks").stdout == jwks
        code, answer = review(p, token)
        assert code == 201 and answer["status"]["userInfo"]["username"] == \
            "system:serviceaccount:default:keeper"
    finally:
        stop_platform(p)
