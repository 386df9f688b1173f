"""Tenancy through the real API: users with real certificates, RBAC, escalation, quotas,
LimitRanges, pod security, VM class/image bindings, node restriction and the audit log."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Platform, kubectl_binary, wait_until


def atoll(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "atoll.cli.main", *args], capture_output=True,
                            text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"atoll {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


class User:
    """kubectl as someone else, with a kubeconfig `atoll user add` issued through the API."""

    def __init__(self, platform: Platform, name: str, tmp: Path, *groups: str) -> None:
        self.name = name
        self.platform = platform
        self.kubeconfig = tmp / f"{name}.kubeconfig"
        args = ["user", "add", name, "--kubeconfig", str(platform.kubeconfig), "-o",
                str(self.kubeconfig)]
        for g in groups:
            args += ["--group", g]
        atoll(*args)

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig),
                   KUBECACHEDIR=str(self.kubeconfig.parent / f"{self.name}-cache"))
        return subprocess.run([kubectl_binary(), *args], input=input, text=True,
                              capture_output=True, env=env, timeout=60)

    def can(self, *args: str) -> bool:
        out = self.kubectl("auth", "can-i", *args)
        return out.stdout.strip() == "yes"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def team(platform: Platform, tmp_path: Path):
    """A namespace from `atoll namespace create` with an owner, an editor and a viewer."""
    ns = unique("team")
    owner, editor, viewer = (User(platform, unique(r), tmp_path) for r in ("own", "ed", "vw"))
    atoll("namespace", "create", ns, "--cpu", "4", "--memory", "8Gi", "--owner", owner.name,
          "--edit", editor.name, "--view", viewer.name, "--kubeconfig", str(platform.kubeconfig))
    yield ns, owner, editor, viewer
    platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)


# -- who may do what --------------------------------------------------------------------------
#: (verb, resource) → allowed for (owner, editor, viewer); asked with can-i and then tried for real
TABLE = [
    ("get", "pods", (True, True, True)),
    ("create", "pods", (True, True, False)),
    ("delete", "pods", (True, True, False)),
    ("create", "pods/exec", (True, True, False)),
    ("get", "secrets", (True, True, False)),
    ("create", "secrets", (True, True, False)),
    ("get", "virtualmachines.vmoperator.vmware.com", (True, True, True)),
    ("create", "virtualmachines.vmoperator.vmware.com", (True, True, False)),
    ("get", "resourcequotas", (True, True, True)),
    ("update", "resourcequotas", (False, False, False)),
    ("delete", "resourcequotas", (False, False, False)),
    ("create", "virtualmachineclasses.vmoperator.vmware.com", (False, False, False)),
    ("create", "rolebindings.rbac.authorization.k8s.io", (True, False, False)),
    ("get", "rolebindings.rbac.authorization.k8s.io", (True, False, False)),
    ("update", "namespaces", (False, False, False)),
]


def test_default_roles_table_agrees_with_can_i(team) -> None:
    ns, *users = team
    wrong = []
    for verb, resource, expected in TABLE:
        for user, want in zip(users, expected):
            if user.can(verb, resource, "-n", ns) != want:
                wrong.append(f"{user.name}: {verb} {resource} should be {want}")
    assert not wrong, "\n".join(wrong)


def test_enforcement_matches_the_table(platform: Platform, team) -> None:
    ns, owner, editor, viewer = team
    platform.kubectl("-n", ns, "create", "secret", "generic", "s", "--from-literal=a=b")
    for user, may_write in ((owner, True), (editor, True), (viewer, False)):
        name = unique("cm")
        made = user.kubectl("-n", ns, "create", "configmap", name, "--from-literal=x=y")
        assert (made.returncode == 0) == may_write, made.stderr
        if not may_write:
            assert "forbidden" in made.stderr.lower() and user.name in made.stderr
        read = user.kubectl("-n", ns, "get", "secret", "s", "-o", "name")
        assert (read.returncode == 0) == (user is not viewer), read.stderr
        assert user.kubectl("-n", ns, "get", "configmaps").returncode == 0
        quota = user.kubectl("-n", ns, "delete", "resourcequota", "--all")
        assert quota.returncode != 0
    assert platform.kubectl("-n", ns, "get", "resourcequota", "-o", "name").stdout.strip()


def test_nothing_outside_the_namespace(platform: Platform, team, namespace: str) -> None:
    ns, owner, editor, _ = team
    platform.kubectl("-n", namespace, "create", "secret", "generic", "other", "--from-literal=a=b")
    for user in (owner, editor):
        for args in (("get", "secrets"), ("get", "pods"), ("create", "configmap", "x")):
            out = user.kubectl("-n", namespace, *args)
            assert out.returncode != 0 and "forbidden" in out.stderr.lower(), out
        assert not user.can("get", "secrets", "-n", namespace)
        assert not user.can("list", "nodes")
        assert not user.can("get", "secrets", "--all-namespaces")
        assert user.kubectl("get", "nodes").returncode != 0
    whoami = editor.kubectl("auth", "whoami", "-o", "json")
    assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == editor.name


def test_a_denial_is_a_403_status_naming_user_verb_and_resource(platform: Platform, team) -> None:
    ns, _, _, viewer = team
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    status = raw_request(viewer.kubeconfig, platform, "POST",
                         f"/api/v1/namespaces/{ns}/configmaps", body)
    assert status["code"] == 403 and status["reason"] == "Forbidden"
    assert f'User "{viewer.name}" cannot create resource "configmaps"' in status["message"]
    assert status["details"]["kind"] == "configmaps"
    assert platform.kubectl("-n", ns, "get", "configmap", "x", check=False).returncode != 0


def test_escalation_is_refused(platform: Platform, team) -> None:
    ns, owner, editor, _ = team
    # the owner may hand out what they have...
    ok = owner.kubectl("-n", ns, "create", "rolebinding", "helpers", "--clusterrole=view",
                       "--user=someone")
    assert ok.returncode == 0, ok.stderr
    # ...but not more
    for args in (("create", "rolebinding", "up", "--clusterrole=cluster-admin",
                  f"--user={owner.name}"),
                 ("create", "role", "nodes", "--verb=get", "--resource=nodes"),
                 ("create", "role", "quota", "--verb=update", "--resource=resourcequotas")):
        out = owner.kubectl("-n", ns, *args)
        assert out.returncode != 0 and "not currently held" in out.stderr, out
    # an editor may not bind at all
    out = editor.kubectl("-n", ns, "create", "rolebinding", "x", "--clusterrole=view",
                         f"--user={editor.name}")
    assert out.returncode != 0
    # nor approve certificate requests (that would mint any identity)
    assert not editor.can("approve", "signers.certificates.k8s.io")
    # nor impersonate anyone
    out = editor.kubectl("--as", owner.name, "-n", ns, "get", "pods")
    assert out.returncode != 0 and "impersonate" in out.stderr


def test_impersonation_for_admins(platform: Platform, team) -> None:
    ns, _, editor, viewer = team
    assert platform.kubectl("--as", editor.name, "auth", "can-i", "create", "pods", "-n", ns,
                            check=False).stdout.strip() == "yes"
    assert platform.kubectl("--as", viewer.name, "auth", "can-i", "create", "pods", "-n", ns,
                            check=False).stdout.strip() == "no"


def test_access_reviews(platform: Platform, team) -> None:
    ns, _, editor, _ = team
    listed = editor.kubectl("auth", "can-i", "--list", "-n", ns)
    assert "configmaps" in listed.stdout and "rolebindings" not in listed.stdout
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": editor.name, "resourceAttributes": {
                  "namespace": ns, "verb": "create", "resource": "pods"}}}
    out = platform.kubectl("create", "--validate=false", "-f", "-", "-o", "json",
                           input=json.dumps(review))
    assert json.loads(out.stdout)["status"]["allowed"] is True
    review["spec"]["resourceAttributes"]["namespace"] = "default"
    out = platform.kubectl("create", "--validate=false", "-f", "-", "-o", "json",
                           input=json.dumps(review))
    assert json.loads(out.stdout)["status"]["allowed"] is False


# -- credentials ------------------------------------------------------------------------------
def raw_request(kubeconfig: Path | None, platform: Platform, method: str, path: str,
                body: str | None = None, token: str | None = None,
                cert: tuple[str, str] | None = None) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=str(platform.data_dir / "pki" / "ca.crt"))
    if kubeconfig is not None:
        cert = write_cert_from(kubeconfig)
    if cert:
        ctx.load_cert_chain(*cert)
    req = urllib.request.Request(platform.url + path, method=method,
                                 data=body.encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            raw = r.read()
            try:
                return {"code": r.status, **json.loads(raw or b"{}")}
            except ValueError:
                return {"code": r.status}
    except urllib.error.HTTPError as err:
        try:
            return json.loads(err.read())
        except ValueError:
            return {"code": err.code}


def write_cert_from(kubeconfig: Path) -> tuple[str, str]:
    import base64

    import yaml

    doc = yaml.safe_load(kubeconfig.read_text())
    user = doc["users"][0]["user"]
    cert, key = kubeconfig.with_suffix(".crt"), kubeconfig.with_suffix(".key")
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    os.chmod(key, 0o600)
    return str(cert), str(key)


def test_anonymous_and_bad_credentials_are_refused(platform: Platform, tmp_path: Path) -> None:
    status = raw_request(None, platform, "GET", "/api/v1/namespaces")
    assert status["code"] == 401
    status = raw_request(None, platform, "GET", "/api/v1/namespaces", token="not-a-token")
    assert status["code"] == 401
    # a certificate from another CA does not get through the TLS handshake
    from atoll.apiserver import pki

    other = pki.ensure_ca(tmp_path / "other")
    pair = pki.ensure_client(tmp_path / "other", other, "mallory", "admin", ("system:masters",))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        raw_request(None, platform, "GET", "/api/v1/namespaces", cert=(str(pair.cert),
                                                                       str(pair.key)))
    # health and version stay readable, as upstream
    assert raw_request(None, platform, "GET", "/version")["code"] == 200


def test_user_add_checks_its_input(platform: Platform) -> None:
    for args in (("system:admin",), ("bob", "--group", "system:masters"),
                 ("bob", "--duration", "5m"), ("bob", "--duration", "soon")):
        out = atoll("user", "add", *args, "--kubeconfig", str(platform.kubeconfig), check=False)
        assert out.returncode != 0 and out.stderr.startswith("error:"), out


# -- quota --------------------------------------------------------------------------------------
def test_quota_is_atomic_under_100_concurrent_creates(platform: Platform, namespace: str) -> None:
    platform.kubectl("-n", namespace, "create", "quota", "q", "--hard=configmaps=10")
    ctx = platform.ssl_context()

    def create(i: int) -> int:
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": f"c{i}"}}).encode()
        req = urllib.request.Request(f"{platform.url}/api/v1/namespaces/{namespace}/configmaps",
                                     data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    with cf.ThreadPoolExecutor(100) as pool:
        codes = list(pool.map(create, range(100)))
    stored = json.loads(platform.kubectl("-n", namespace, "get", "configmaps", "-o",
                                         "json").stdout)["items"]
    ours = [c for c in stored if c["metadata"]["name"].startswith("c")]
    # kube-root-ca.crt (published in every namespace) may hold one of the ten
    assert len(stored) == 10 and codes.count(201) == len(ours), (codes.count(201), stored)
    assert codes.count(403) == 100 - len(ours)
    used = wait_for_used(platform, namespace, "q", "configmaps", "10")
    # deleting gives quota back, through the quota controller
    for i in [i for i, c in enumerate(codes) if c == 201][:3]:
        platform.kubectl("-n", namespace, "delete", "configmap", f"c{i}")
    used = wait_for_used(platform, namespace, "q", "configmaps", "7")
    assert used == "7"
    for i in range(3):
        platform.kubectl("-n", namespace, "create", "configmap", f"again{i}")
    refused = platform.kubectl("-n", namespace, "create", "configmap", "one-too-many",
                               check=False)
    assert "exceeded quota: q" in refused.stderr


def wait_for_used(platform: Platform, ns: str, quota: str, key: str, want: str,
                  timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = json.loads(platform.kubectl("-n", ns, "get", "quota", quota, "-o", "json").stdout
                         ).get("status", {}).get("used", {}).get(key)
        if got == want:
            return got
        time.sleep(0.2)
    raise AssertionError(f"quota {quota} used {key} stayed {got}, wanted {want}")


def test_compute_quota_with_limitrange_defaults(platform: Platform, namespace: str) -> None:
    platform.kubectl("-n", namespace, "create", "quota", "compute",
                     "--hard=requests.cpu=1,limits.memory=1Gi,pods=5")
    # without defaults, a pod that does not say what it needs is refused
    out = platform.kubectl("-n", namespace, "run", "bare", "--image=busybox", "--restart=Never",
                           "--", "true", check=False)
    assert "must specify" in out.stderr and "requests.cpu" in out.stderr, out.stderr
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": "defaults", "namespace": namespace},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
                             "defaultRequest": {"cpu": "300m", "memory": "128Mi"},
                             "max": {"memory": "512Mi"}}]}}))
    for i in range(3):
        platform.kubectl("-n", namespace, "run", f"p{i}", "--image=busybox", "--restart=Never",
                         "--", "sleep", "3600")
    pod = json.loads(platform.kubectl("-n", namespace, "get", "pod", "p0", "-o", "json").stdout)
    assert pod["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "500m", "memory": "256Mi"},
        "requests": {"cpu": "300m", "memory": "128Mi"}}
    out = platform.kubectl("-n", namespace, "run", "p3", "--image=busybox", "--restart=Never",
                           "--", "true", check=False)
    assert "exceeded quota: compute" in out.stderr and "requests.cpu" in out.stderr
    out = platform.kubectl("-n", namespace, "run", "big", "--image=busybox", "--restart=Never",
                           "--overrides", json.dumps({"spec": {"containers": [{
                               "name": "big", "image": "busybox", "command": ["true"],
                               "resources": {"limits": {"memory": "1Gi"}}}]}}), check=False)
    assert "maximum memory usage per Container is 512Mi" in out.stderr, out.stderr
    used = json.loads(platform.kubectl("-n", namespace, "get", "quota", "compute", "-o",
                                       "json").stdout)["status"]["used"]
    assert used["requests.cpu"] == "900m" and used["limits.memory"] == "768Mi"


# -- namespace as a product -------------------------------------------------------------------
def test_namespace_create_and_describe(platform: Platform, team) -> None:
    ns, owner, editor, viewer = team
    out = atoll("namespace", "describe", ns, "--kubeconfig", str(platform.kubeconfig)).stdout
    assert "limits.cpu" in out and "8Gi" in out and "baseline" in out
    assert owner.name in out and editor.name in out and viewer.name in out
    # re-running updates in place; -o yaml prints the same objects for Git
    atoll("namespace", "create", ns, "--cpu", "6", "--memory", "8Gi", "--owner", owner.name,
          "--kubeconfig", str(platform.kubeconfig))
    hard = json.loads(platform.kubectl("-n", ns, "get", "quota", "atoll-budget", "-o",
                                       "json").stdout)["spec"]["hard"]
    assert hard["limits.cpu"] == "6"
    printed = atoll("namespace", "create", ns, "--cpu", "6", "-o", "yaml").stdout
    assert "kind: ResourceQuota" in printed and "kind: LimitRange" in printed
    bad = atoll("namespace", "create", unique("bad"), "--cpu", "lots", "--kubeconfig",
                str(platform.kubeconfig), check=False)
    assert bad.returncode != 0 and "--cpu" in bad.stderr


def test_vm_classes_and_images_bound_to_the_namespace(platform: Platform) -> None:
    ns = unique("vmns")
    atoll("namespace", "create", ns, "--vm-class", "best-effort-small", "--image", "tiny",
          "--kubeconfig", str(platform.kubeconfig))
    try:
        def vm(name: str, klass: str, image: str) -> subprocess.CompletedProcess[str]:
            return platform.kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                                    input=json.dumps({
                                        "apiVersion": "vmoperator.vmware.com/v1alpha3",
                                        "kind": "VirtualMachine",
                                        "metadata": {"name": name, "namespace": ns},
                                        "spec": {"className": klass, "imageName": image,
                                                 "powerState": "PoweredOff"}}))
        assert vm("ok", "best-effort-small", "tiny").returncode == 0
        out = vm("big", "guaranteed-large", "tiny")
        assert "spec.className" in out.stderr and "not bound" in out.stderr, out.stderr
        out = vm("other", "best-effort-small", "debian")
        assert "spec.imageName" in out.stderr and "not bound" in out.stderr, out.stderr
        classes = platform.kubectl("-n", ns, "get", "vmclass", "-o", "name").stdout.split()
        assert classes == ["virtualmachineclass.vmoperator.vmware.com/best-effort-small"]
    finally:
        platform.kubectl("delete", "namespace", ns, "--wait=false", check=False)


# -- the host stays out of reach --------------------------------------------------------------
def test_pod_security_keeps_the_host_out_of_reach(platform: Platform, team) -> None:
    ns, owner, editor, _ = team
    for name, override in (
            ("priv", {"securityContext": {"privileged": True}}),
            ("caps", {"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}})):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
               "spec": {"containers": [{"name": "c", "image": "busybox", **override}]}}
        out = editor.kubectl("create", "-f", "-", input=json.dumps(pod))
        assert out.returncode != 0 and "violates PodSecurity" in out.stderr, out.stderr
    host = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "host", "namespace": ns},
            "spec": {"hostNetwork": True, "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                     "containers": [{"name": "c", "image": "busybox",
                                     "volumeMounts": [{"name": "root", "mountPath": "/host"}]}]}}
    out = editor.kubectl("create", "-f", "-", input=json.dumps(host))
    assert "hostNetwork=true" in out.stderr and "hostPath volumes" in out.stderr, out.stderr
    # the owner cannot lift the level; an administrator can
    out = owner.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=privileged",
                        "--overwrite")
    assert out.returncode != 0
    platform.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=privileged",
                     "--overwrite")
    out = editor.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(host))
    assert out.returncode == 0, out.stderr


def test_a_host_may_change_only_its_own_objects(platform: Platform, tmp_path: Path) -> None:
    deadline = time.monotonic() + 60
    while not (nodes := json.loads(platform.kubectl("get", "nodes", "-o", "json").stdout)
               ["items"]):
        assert time.monotonic() < deadline, "the agent never registered its Node"
        time.sleep(0.2)
    name = nodes[0]["metadata"]["name"]
    kc = tmp_path / "intruder.kubeconfig"
    kc.write_text(atoll("kubeconfig", "--data-dir", str(platform.data_dir), "--node",
                        "intruder").stdout)
    env = dict(os.environ, KUBECONFIG=str(kc), KUBECACHEDIR=str(tmp_path / "cache"))

    def k(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl_binary(), *args], capture_output=True, text=True, env=env,
                              timeout=60, input=input)

    assert k("get", "nodes").returncode == 0  # hosts may read
    out = k("label", "node", name, "stolen=yes")
    assert out.returncode != 0 and "may only update its own Node" in out.stderr, out.stderr
    out = k("-n", "kube-node-lease", "annotate", "lease", name, "x=y")
    assert out.returncode != 0 and "its own Lease" in out.stderr, out.stderr
    assert k("create", "namespace", unique("nope")).returncode != 0
    # a host publishes the slices of what it serves itself, and nobody else's
    assert k("get", "endpointslices", "-A").returncode == 0
    # the host registers its Node first (its slices go with it), kept out of placement
    out = k("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "intruder"},
        "spec": {"unschedulable": True,
                 "taints": [{"key": "atoll.test/intruder", "effect": "NoSchedule"}]}}))
    assert out.returncode == 0, out.stderr
    try:
        _intruder_writes(platform, k, name)
    finally:
        platform.kubectl("delete", "node", "intruder", "--wait=false", check=False)
    # the real agent signs in as its host (atoll up issued it node credentials)
    who = (platform.data_dir / "agent.kubeconfig").read_text()
    assert f"system:node:{name}" in who


def _intruder_writes(platform: Platform, k: Any, name: str) -> None:
    """What host ``intruder`` may and may not write (``name`` is another host)."""
    def dns_slice(slice_name: str, node: str, namespace: str = "kube-system") -> str:
        return json.dumps({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice_name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": "kube-dns",
                                    "endpointslice.kubernetes.io/managed-by": "agent.atoll.dev"}},
            "addressType": "IPv4", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
            "endpoints": [{"addresses": ["10.0.0.9"], "nodeName": node}]})
    out = k("create", "-f", "-", input=dns_slice("kube-dns-intruder", "intruder"))
    assert out.returncode == 0, out.stderr
    for bad in (dns_slice(f"kube-dns-{name}", name), dns_slice("kube-dns-intruder", name),
                dns_slice("kube-dns-intruder", "intruder", "default")):
        out = k("create", "-f", "-", input=bad)
        assert out.returncode != 0 and "its own EndpointSlices" in out.stderr, out.stderr
    out = k("-n", "kube-system", "label", "endpointslice", "kube-dns-intruder",
            "endpointslice.kubernetes.io/managed-by=someone", "--overwrite")
    assert out.returncode != 0 and "its own EndpointSlices" in out.stderr, out.stderr
    assert k("-n", "kube-system", "delete", "endpointslice", "kube-dns-intruder").returncode == 0
    assert k("-n", "default", "create", "configmap", unique("nope")).returncode != 0
    # a host reads only the Secrets its own workloads use, and lists none
    secret = unique("s")
    platform.kubectl("-n", "default", "create", "secret", "generic", secret, "--from-literal=a=b")
    out = k("-n", "default", "get", "secret", secret)
    assert out.returncode != 0 and "no relationship found" in out.stderr, out.stderr
    assert k("-n", "default", "get", "secrets").returncode != 0
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": secret, "namespace": "default"},
        "spec": {"nodeName": "intruder", "containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "s", "secret": {"secretName": secret}}]}}))
    try:
        assert k("-n", "default", "get", "secret", secret).returncode == 0
    finally:
        platform.kubectl("-n", "default", "delete", "pod", secret, "--grace-period=0",
                         "--force", check=False)


# -- audit ------------------------------------------------------------------------------------
def test_every_mutating_request_is_audited(platform: Platform, team) -> None:
    ns, _, editor, viewer = team
    editor.kubectl("-n", ns, "create", "configmap", "audited")
    viewer.kubectl("-n", ns, "delete", "configmap", "audited")
    log = platform.data_dir / "audit.log"

    def entries() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines() if ns in line]

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = entries()
        made = [e for e in found if e["verb"] == "create" and
                e.get("objectRef", {}).get("resource") == "configmaps" and
                e["user"]["username"] == editor.name]
        denied = [e for e in found if e["verb"] == "delete" and
                  e["user"]["username"] == viewer.name]
        if made and denied:
            break
        time.sleep(0.2)
    assert made and made[0]["responseStatus"]["code"] == 201
    assert made[0]["objectRef"] == {"resource": "configmaps", "namespace": ns,
                                    "apiVersion": "v1"} or made[0]["objectRef"]["namespace"] == ns
    assert denied and denied[0]["responseStatus"]["code"] == 403
    assert denied[0]["objectRef"]["name"] == "audited"


# -- every endpoint -----------------------------------------------------------------------------
#: what a signed-in user with no bindings may still do, as upstream's system:basic-user
SELF_SERVICE = ("/selfsubjectaccessreviews", "/selfsubjectrulesreviews", "/selfsubjectreviews")


def test_every_endpoint_refuses_strangers(platform: Platform, tmp_path: Path) -> None:
    """Walk every path and method of the OpenAPI documents as nobody (401) and as a user
    without bindings (403); discovery, health and self-reviews are the documented exceptions."""
    stranger = User(platform, unique("stranger"), tmp_path)
    cert = write_cert_from(stranger.kubeconfig)
    index = json.loads(platform.kubectl("get", "--raw", "/openapi/v3").stdout)["paths"]
    calls: list[tuple[str, str]] = []
    for doc_path in index:
        doc = json.loads(platform.kubectl("get", "--raw", f"/openapi/v3/{doc_path}").stdout)
        for path, ops in doc["paths"].items():
            concrete = (path.replace("{namespace}", "default").replace("{name}", "x")
                        .replace("{path}", "x"))
            for method in ("get", "post", "put", "patch", "delete"):
                if method in ops:
                    calls.append((method.upper(), concrete))
    assert len(calls) > 200, len(calls)
    bad = []
    for method, path in calls:
        body = "{}" if method in ("POST", "PUT", "PATCH") else None
        anon = raw_request(None, platform, method, path, body)
        if anon.get("code") != 401:
            bad.append(f"anonymous {method} {path}: {anon.get('code')}")
        signed_in = raw_request(None, platform, method, path, body, cert=cert)
        allowed = method == "POST" and path.endswith(SELF_SERVICE)
        if not allowed and signed_in.get("code") != 403:
            bad.append(f"{stranger.name} {method} {path}: {signed_in.get('code')}")
    assert not bad, "\n".join(bad[:40])
    for path in ("/api", "/apis", "/version", "/healthz", "/openapi/v3"):
        assert raw_request(None, platform, "GET", path, cert=cert)["code"] == 200


def test_cluster_roles_aggregate(platform: Platform, team) -> None:
    """An aggregate-to-edit role (as a CRD ships one) extends Edit everywhere, as upstream."""
    ns, _, editor, _ = team
    name = unique("limits-edit")
    assert not editor.can("create", "limitranges", "-n", ns)
    platform.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name,
                     "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["limitranges"], "verbs": ["create"]}]}))
    try:
        deadline = time.monotonic() + 20
        while not editor.can("create", "limitranges", "-n", ns):
            assert time.monotonic() < deadline, "edit never picked up the aggregated rule"
            time.sleep(0.2)
        rules = json.loads(platform.kubectl("get", "clusterrole", "admin", "-o", "json").stdout
                           )["rules"]
        assert any(r.get("resources") == ["limitranges"] and r.get("verbs") == ["create"]
                   for r in rules)
    finally:
        platform.kubectl("delete", "clusterrole", name)
    deadline = time.monotonic() + 20
    while editor.can("create", "limitranges", "-n", ns):
        assert time.monotonic() < deadline, "the rule outlived its role"
        time.sleep(0.2)


def test_vm_quotas_count_vms_and_their_class_reservations(platform: Platform,
                                                          namespace: str) -> None:
    platform.kubectl("-n", namespace, "create", "quota", "vms", "--hard=count/virtualmachines."
                     "vmoperator.vmware.com=2,requests.memory=6Gi")
    deadline = time.monotonic() + 30
    while platform.kubectl("-n", namespace, "get", "vmclass", "guaranteed-small",
                           check=False).returncode != 0:
        assert time.monotonic() < deadline, "no default classes"
        time.sleep(0.2)

    def vm(name: str, klass: str) -> subprocess.CompletedProcess[str]:
        return platform.kubectl("apply", "-f", "-", check=False, input=json.dumps({
            "apiVersion": "vmoperator.vmware.com/v1alpha3", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"className": klass, "imageName": "none", "powerState": "PoweredOff"}}))

    assert vm("a", "guaranteed-small").returncode == 0  # reserves 4Gi
    out = vm("b", "guaranteed-small")  # another 4Gi: over 6Gi
    assert "exceeded quota: vms" in out.stderr and "requests.memory" in out.stderr, out.stderr
    assert vm("c", "best-effort-small").returncode == 0  # reserves nothing
    out = vm("d", "best-effort-small")  # a third VM
    assert "count/virtualmachines.vmoperator.vmware.com" in out.stderr, out.stderr
    used = json.loads(platform.kubectl("-n", namespace, "get", "quota", "vms", "-o",
                                       "json").stdout)["status"]["used"]
    assert used == {"count/virtualmachines.vmoperator.vmware.com": "2",
                    "requests.memory": "4Gi"}


def test_deleted_default_roles_come_back(platform: Platform) -> None:
    platform.kubectl("delete", "clusterrole", "view")
    platform.kubectl("delete", "clusterrolebinding", "system:basic-user")
    wait_until("the defaults back", lambda: platform.kubectl(
        "get", "clusterrole", "view", check=False).returncode == 0 and platform.kubectl(
        "get", "clusterrolebinding", "system:basic-user", check=False).returncode == 0, 30)
